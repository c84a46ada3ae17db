"""Where the publisher may listen, and how it is protected beyond this machine.

Loopback (127.0.0.0/8, ::1, localhost), ipc:// and inproc:// need nothing. Binding any other
address (a LAN interface, 0.0.0.0, *) publishes patient images to the network, so it requires
either ZeroMQ CURVE (`--curve-secret FILE`: the server's key pair, made by
`python -m streamer.netsec keys DIR`; subscribers need the server's public key, and with
`--curve-clients DIR` only the client public keys found there are let in) or an explicit
`--insecure`. A port outside 0..65535 or an unparsable address is refused with one line, never
silently replaced (ZeroMQ would bind another port for "99999").
"""
from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import zmq

from engines.errors import UserError

LOCAL_SCHEMES = ("ipc", "inproc")


def split_tcp(address: str) -> tuple[str, str]:
    """(host, port) of tcp://HOST:PORT, HOST may be [v6]; UserError when malformed."""
    rest = address[len("tcp://"):]
    host, sep, port = rest.rpartition(":")
    if not sep or not host:
        raise UserError(f"cannot publish on {address}: expected tcp://HOST:PORT")
    if port != "*":
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise UserError(f"cannot publish on {address}: port {port!r} is not in 0..65535")
    return host, port


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False          # a name, an interface, * or 0.0.0.0: beyond this machine


def check_publish_address(address: str, curve_secret: str | None, insecure: bool) -> bool:
    """Validate; returns whether the socket needs IPv6 enabled."""
    scheme, sep, _ = address.partition("://")
    if not sep:
        raise UserError(f"cannot publish on {address}: expected tcp://HOST:PORT or ipc://PATH")
    if scheme in LOCAL_SCHEMES:
        return False
    if scheme != "tcp":
        raise UserError(f"cannot publish on {address}: unsupported transport '{scheme}://' (tcp, ipc)")
    host, _ = split_tcp(address)
    if not is_loopback_host(host) and not curve_secret and not insecure:
        raise UserError(f"--publish {address} is reachable beyond this machine: give --curve-secret FILE "
                        f"(ZeroMQ CURVE, see docs/service.md) or --insecure")
    return host.startswith("[")


def load_keypair(path: str) -> tuple[bytes, bytes]:
    import zmq.auth
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read CURVE key file {path}: {exc}") from None
    if not secret:
        raise UserError(f"{path} holds no secret key (give the .key_secret file)")
    return public, secret


def load_public_key(path: str) -> bytes:
    import zmq.auth
    try:
        return zmq.auth.load_certificate(path)[0]
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read CURVE key file {path}: {exc}") from None


_authenticator = None


def bind_publisher(sock, address: str, curve_secret: str | None = None, curve_clients: str | None = None,
                   insecure: bool = False) -> str:
    """Validate, secure and bind `sock`; returns the endpoint actually bound."""
    global _authenticator
    ipv6 = check_publish_address(address, curve_secret, insecure)
    if not zmq.has("curve") and curve_secret:
        raise UserError("this pyzmq/libzmq has no CURVE support")
    if ipv6:
        sock.setsockopt(zmq.IPV6, 1)
    if curve_secret:
        public, secret = load_keypair(curve_secret)
        if curve_clients:
            if not Path(curve_clients).is_dir():
                raise UserError(f"--curve-clients {curve_clients}: not a directory of client public keys")
            from zmq.auth.thread import ThreadAuthenticator
            if _authenticator is None:
                _authenticator = ThreadAuthenticator(zmq.Context.instance())
                _authenticator.start()
            _authenticator.configure_curve(domain="*", location=curve_clients)
        sock.curve_secretkey, sock.curve_publickey, sock.curve_server = secret, public, True
    try:
        sock.bind(address)
    except zmq.ZMQError as exc:
        raise UserError(f"cannot publish on {address}: {exc}") from None
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def secure_subscriber(sock, server_key: str | None) -> None:
    """Client side: CURVE with the server's public key and a fresh key pair of our own."""
    if not server_key:
        return
    sock.curve_serverkey = load_public_key(server_key)
    public, secret = zmq.curve_keypair()
    sock.curve_publickey, sock.curve_secretkey = public, secret


def main(argv: list[str]) -> int:
    """python -m streamer.netsec keys DIR [NAME]: write NAME.key and NAME.key_secret (CURVE)."""
    if len(argv) < 2 or argv[0] != "keys":
        print("usage: python -m streamer.netsec keys DIR [NAME]", file=sys.stderr)
        return 2
    import zmq.auth
    Path(argv[1]).mkdir(parents=True, exist_ok=True)
    pub, sec = zmq.auth.create_certificates(argv[1], argv[2] if len(argv) > 2 else "server")
    print(f"public key: {pub}\nsecret key: {sec}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

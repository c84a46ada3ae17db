"""Web overlay (aiohttp): the exam's second screen, pushed over a WebSocket to any number of viewers.

Routes: `/` the page; `/ws` WebSocket (server -> page: JSON state ~15/s and the live JPEG as binary
messages; page -> server: control requests); `/state.json` the same state once; `/exam/PATH` files
of the running exam's folder (thumbnails, report.html).

Why aiohttp: one well-kept library (aio-libs) gives the HTTP server, WebSockets and an asyncio
loop that runs inside this process's thread, with no ASGI server to manage beside it (Starlette
would need uvicorn too); it is already in the package lists and small. The page needs push (no
polling), several viewers at once and controls: a hand-written http.server cannot push.

Security: bound to loopback by default. Bound beyond loopback, a --token is required (or an
explicit --insecure): every route then needs `?token=...` (the page carries it on).
"""
from __future__ import annotations

import asyncio
import base64
import hmac
import ipaddress
import json
import threading
import time
from pathlib import Path

from engines.errors import UserError

from ..exam.control import control_request
from .render import is_stale
from .subscriber import OverlaySubscriber

STATIC = Path(__file__).parent / "static"
PUSH_HZ = 15.0


def state_summary(result: dict | None, now: float, received: float | None, stale_after_s: float) -> dict:
    stale, why = is_stale(result, now, received, stale_after_s)
    r = result or {}
    flags = r.get("flags") or {}
    text = why if stale else ("NO IMAGE" if flags.get("none") else "FROZEN" if flags.get("frozen")
                              else "UNCERTAIN" if flags.get("uncertain") else "LIVE")
    st = r.get("stages") or {}
    cam = r.get("cam")
    cam_out = None
    if not stale and isinstance(cam, dict) and isinstance(cam.get("data"), (bytes, bytearray)):
        cam_out = {"h": cam.get("h"), "w": cam.get("w"), "label": cam.get("label"),
                   "data": base64.b64encode(bytes(cam["data"])).decode()}
    return {"plane": r.get("plane"), "label": r.get("label"), "confidence": r.get("confidence"),
            "topk": r.get("topk"), "anomaly": r.get("anomaly"), "stale": stale, "state_text": text,
            "frame": r.get("frame"), "fps": r.get("fps", 0.0), "cam": cam_out,
            "latency_ms": (st["publish"] - st["capture"]) * 1e3 if "publish" in st else None,
            "model": (r.get("model") or {}).get("id")}


def exam_summary(exam: dict | None) -> dict | None:
    """The exam state for the page: checklist with thumbnail URLs (served from /exam/)."""
    if not exam:
        return None
    views = []
    for v in exam.get("views", []):
        best = v.get("best") or {}
        views.append({"id": v.get("id"), "title": v.get("title"), "plane": v.get("plane"),
                      "labels": v.get("labels"), "status": v.get("status"),
                      "thumb": f"exam/{best['image']}" if best.get("image") else None,
                      "heatmap": f"exam/{best['heatmap']}" if best.get("heatmap") else None,
                      "score": best.get("score"), "t_s": best.get("t_s"), "captures": len(v.get("captures") or [])})
    return {"protocol": (exam.get("protocol") or {}).get("title") or (exam.get("protocol") or {}).get("name"),
            "name": (exam.get("protocol") or {}).get("name"), "state": exam.get("state"),
            "duration_s": exam.get("duration_s"), "started": exam.get("started"),
            "report": f"exam/{exam['report']}" if exam.get("report") and exam.get("state") == "ended" else None,
            "views": views, "control": bool(exam.get("control"))}


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class WebOverlay:
    def __init__(self, connect: str, stream: str = "", stale_after_s: float = 0.5, token: str | None = None,
                 control: str | None = None):
        self.sub = OverlaySubscriber(connect, stream)
        self.stale_after_s = stale_after_s
        self.token = token
        self.control = control
        self.lock = threading.Lock()
        self.clients: set = set()

    # ---- the subscriber side (its own thread: ZeroMQ polling is blocking) ----
    def poll_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with self.lock:
                self.sub.poll(timeout_ms=0)
            time.sleep(0.01)

    def snapshot(self) -> tuple[dict, bytes | None, int]:
        with self.lock:
            sub = self.sub
            state = state_summary(sub.result, time.monotonic(), sub.result_received, self.stale_after_s)
            state["exam"] = exam_summary(sub.exam)
            state["type"] = "state"
            return state, sub.frame_jpeg, sub.frame_seq

    def exam_dir(self) -> Path | None:
        with self.lock:
            exam = self.sub.exam
        d = (exam or {}).get("dir")
        return Path(d) if d else None

    def control_address(self) -> str | None:
        with self.lock:
            exam = self.sub.exam
        return self.control or (exam or {}).get("control")

    # ---- HTTP ----
    def authorised(self, request) -> bool:
        if not self.token:
            return True
        given = request.query.get("token", "")
        return hmac.compare_digest(given.encode(), self.token.encode())

    def app(self):
        from aiohttp import web

        @web.middleware
        async def guard(request, handler):
            if not self.authorised(request):
                return web.Response(status=403, text="forbidden: this overlay needs ?token=...\n")
            resp = await handler(request)
            resp.headers["Cache-Control"] = "no-store"
            return resp

        async def index(request):
            return web.FileResponse(STATIC / "index.html")

        async def state_json(request):
            state, _, _ = self.snapshot()
            return web.json_response(state)

        async def exam_file(request):
            root = self.exam_dir()
            if root is None:
                raise web.HTTPNotFound(text="no exam running\n")
            try:
                path = (root / request.match_info["path"]).resolve()
                path.relative_to(root.resolve())      # never outside the exam folder
            except (ValueError, OSError):
                raise web.HTTPNotFound(text="not found\n")
            if not path.is_file() or path.name.startswith("."):
                raise web.HTTPNotFound(text="not found\n")
            return web.FileResponse(path)

        async def ws_handler(request):
            ws = web.WebSocketResponse(heartbeat=10.0)
            await ws.prepare(request)
            self.clients.add(ws)
            try:
                async for msg in ws:
                    if msg.type == web.WSMsgType.TEXT:
                        reply = await asyncio.get_running_loop().run_in_executor(None, self.handle_control, msg.data)
                        await self._send(ws, json.dumps(reply))
            finally:
                self.clients.discard(ws)
            return ws

        app = web.Application(middlewares=[guard])
        app.add_routes([web.get("/", index), web.get("/index.html", index), web.get("/state.json", state_json),
                        web.get("/ws", ws_handler), web.get("/exam/{path:.+}", exam_file)])
        return app

    def handle_control(self, raw: str) -> dict:
        """A control request from a page -> the pipeline's exam control endpoint."""
        try:
            req = json.loads(raw)
        except json.JSONDecodeError:
            return {"type": "reply", "ok": False, "error": "request is not JSON"}
        if not isinstance(req, dict):
            return {"type": "reply", "ok": False, "error": "request must be an object"}
        address = self.control_address()
        if not address:
            return {"type": "reply", "ok": False, "error": "no exam control endpoint (run with --exam)"}
        reply = control_request(address, {k: v for k, v in req.items() if k in ("op", "view", "capture")})
        reply.pop("exam", None)         # the new state comes with the next push
        return {"type": "reply", "op": req.get("op"), **reply}

    async def _send(self, ws, data) -> bool:
        """Send to one viewer; a viewer that went away is dropped quietly (no traceback)."""
        try:
            if isinstance(data, bytes):
                await ws.send_bytes(data)
            else:
                await ws.send_str(data)
            return True
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            self.clients.discard(ws)
            return False
        except Exception:
            self.clients.discard(ws)
            return False

    async def push_forever(self, stop: threading.Event) -> None:
        period, last_seq = 1.0 / PUSH_HZ, -1
        while not stop.is_set():
            await asyncio.sleep(period)
            if not self.clients:
                continue
            state, jpeg, seq = self.snapshot()
            text = json.dumps(state)
            send_frame = jpeg is not None and seq != last_seq and not state["stale"]
            last_seq = seq
            for ws in list(self.clients):
                if ws.closed:
                    self.clients.discard(ws)
                    continue
                if await self._send(ws, text) and send_frame:
                    await self._send(ws, jpeg)


def serve_web(connect: str, bind: str, stop: threading.Event, stale_after_s: float = 0.5,
              fps: float = 15, stream: str = "", size=None, on_ready=None, token: str | None = None,
              insecure: bool = False, control: str | None = None) -> None:
    """Serve until `stop` is set. Blocks; runs its own asyncio loop in the calling thread."""
    from aiohttp import web

    host, _, port = bind.rpartition(":")
    host = host or "127.0.0.1"
    try:
        port_n = int(port)
    except ValueError:
        raise UserError(f"--web {bind}: expected HOST:PORT, e.g. 127.0.0.1:8090") from None
    if not is_loopback(host) and not token and not insecure:
        raise UserError(f"--web {bind} is reachable beyond this machine: give --token SECRET "
                        "(viewers open http://HOST:PORT/?token=SECRET) or --insecure")
    overlay = WebOverlay(connect, stream, stale_after_s, token, control)
    poller = threading.Thread(target=overlay.poll_forever, args=(stop,), name="overlay-sub", daemon=True)
    poller.start()

    async def main():
        runner = web.AppRunner(overlay.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host.strip("[]"), port_n)   # [::1]:PORT: the socket wants ::1
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise UserError(f"cannot serve the web overlay on {bind}: {exc}") from None
        bound = site._server.sockets[0].getsockname()[1] if site._server and site._server.sockets else port_n
        if on_ready:
            on_ready(f"http://{host}:{bound}/" + (f"?token={token}" if token else ""))
        pusher = asyncio.create_task(overlay.push_forever(stop))
        try:
            while not stop.is_set():
                await asyncio.sleep(0.1)
        finally:
            pusher.cancel()
            for ws in list(overlay.clients):
                try:
                    await ws.close()
                except Exception:
                    pass
            await runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        stop.set()
        poller.join(timeout=2)
        overlay.sub.close()

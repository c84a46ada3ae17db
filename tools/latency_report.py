#!/usr/bin/env python3
"""Per-stage latency of the real pipeline, configurations side by side with ratios.

Modes (all drive or read the real `sonoplane run` code path; stats in streamer/latency.py):

  report RUN.jsonl [...] [--cdf PNG]
      from `sonoplane run --record RUN.jsonl`: per-stage table (capture->preprocess,
      preprocess->infer, infer->smooth, smooth->publish, capture->publish) + CDF plot.
  live --connect tcp://127.0.0.1:5555 --duration 20 [--stream ID]
      subscribes (no CONFLATE: every message) and adds capture->subscriber, stamped with this
      process's time.monotonic() (same host only: CLOCK_MONOTONIC is system-wide).
  compare --video V --config NAME="run args" [--config ...] [--repeat 2] [--baseline] [--two-stream]
      runs each configuration on the same video, one after another, repeated interleaved
      (A B A B) so machine noise hits every configuration alike; each at native rate (as a
      scanner feeds it; the newest frame wins, skipped frames counted) and with --fast (every
      frame, headless throughput), reported separately, with ratios against the FIRST config.
      --baseline adds the seed-style baseline (tools/seed_baseline.py) on the same video;
      --two-stream runs two pipelines at once (--video2, separate ports and stream ids).

Every mode prints markdown tables on stdout; --json writes everything; durations in ms.
Warm-up: the first --warmup-frames results (default 30) and --warmup-seconds are dropped.
tail = p100 - p95; flatness = p90 - p10. CPU cores = user+sys CPU time of the run's process tree
(os.wait4 rusage: the pipeline and its capture process) / wall time of the run.
Glass-to-glass estimate = 1 source frame + processing p50/p99 rounded up to the display vsync
+ 1 vsync of display (docs/latency.md).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from streamer import latency as L  # noqa: E402
from engines.errors import UserError  # noqa: E402

MODES = ("native", "fast")
# Flags compare sets itself; a config may not override them.
RESERVED_FLAGS = ("--source", "--record", "--publish", "--stream-id", "--fast")


# --- running `sonoplane run` and measuring it --------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MeasuredProcess:
    """A child process whose own process tree's CPU time is read at exit with os.wait4
    (rusage of the child + its waited-for children: the capture process is joined by the pipeline)."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict | None = None):
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self._out, stderr=self._err)
        self.info: dict | None = None

    def poll(self) -> dict | None:
        if self.info is None:
            pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
            if pid == 0:
                return None
            self._finish(status, ru)
        return self.info

    def wait(self, timeout_s: float | None = None) -> dict:
        end = None if timeout_s is None else time.monotonic() + timeout_s
        while self.poll() is None:
            if end is not None and time.monotonic() > end:
                self._stop()
                self.info["timed_out"] = True
                break
            time.sleep(0.02)
        return self.info

    def _stop(self) -> None:
        # SIGINT first: the pipeline's cleanup joins its capture process; SIGKILL would orphan it.
        self.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.info is None:
            self.proc.kill()
            _, status, ru = os.wait4(self.proc.pid, 0)
            self._finish(status, ru)

    def _finish(self, status: int, ru) -> None:
        wall = time.monotonic() - self.t0
        self.proc.returncode = os.waitstatus_to_exitcode(status)   # reaped here, not by Popen
        cpu = ru.ru_utime + ru.ru_stime
        self._out.seek(0)
        self._err.seek(0)
        self.info = {"returncode": self.proc.returncode, "wall_s": wall, "cpu_s": cpu,
                     "cores": cpu / wall if wall > 0 else 0.0,
                     "stdout": self._out.read().decode(errors="replace"),
                     "stderr": self._err.read().decode(errors="replace")}
        self._out.close()
        self._err.close()


def run_and_measure(cmd: list[str], cwd: Path = ROOT, env: dict | None = None,
                    timeout_s: float | None = None) -> dict:
    return MeasuredProcess(cmd, cwd, env).wait(timeout_s)


def sonoplane_cmd(video: str, extra: list[str], record: Path, mode: str, stream_id: str = "0") -> list[str]:
    return ([sys.executable, "-m", "streamer", "run", "--source", str(video), "--record", str(record),
             "--publish", f"tcp://127.0.0.1:{free_port()}", "--stream-id", stream_id, "--quiet", *extra]
            + (["--fast"] if mode == "fast" else []))


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _check_run(info: dict, what: str) -> None:
    if info.get("timed_out"):
        raise UserError(f"{what}: timed out")
    if info["returncode"] != 0:
        last = (info["stderr"].strip().splitlines() or [f"exit status {info['returncode']}"])[-1]
        raise UserError(f"{what} failed: {last}")


def run_metrics(results: list[dict], info: dict, args) -> dict:
    """One run's figures: capture->publish and infer after the warm-up, throughput, skips, cores."""
    kept, _ = L.drop_warmup(results, args.warmup_frames, args.warmup_seconds, include_blank=args.include_blank)
    lat = [L.stage_durations_ms(r)["capture->publish"] for r in kept]
    infer = [L.stage_durations_ms(r)["preprocess->infer"] for r in kept]
    last = results[-1]
    return {"classified": len(results), "skipped": int(last.get("skipped_total", 0)),
            "frames": int(last.get("frame", len(results) - 1)) + 1,
            "fps": L.classified_fps(results), "source_fps": (last.get("source") or {}).get("fps"),
            "wall_s": info["wall_s"], "cpu_s": info["cpu_s"], "cores": info["cores"],
            "latency_ms": lat, "infer_ms": infer,
            "blank": sum(not L.model_ran(r) for r in results),
            "stage_ms": {span: L.span_values(results, span, args.warmup_frames, args.warmup_seconds,
                                             args.include_blank)
                         for span in L.STAGE_SPANS}}


def run_once(video: str, extra: list[str], mode: str, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "run.jsonl"
        info = run_and_measure(sonoplane_cmd(video, extra, record, mode), env=_env(), timeout_s=args.run_timeout)
        _check_run(info, f"sonoplane run {' '.join(extra)} ({mode})")
        return run_metrics(L.read_results_jsonl(record), info, args)


# --- report -----------------------------------------------------------------------------------

def cdf_png(curves: dict[str, list[float]], path: str, xlabel: str, panels: dict[str, dict[str, list[float]]] | None = None) -> None:
    """CDF plot(s). `curves`: one panel; `panels`: {panel title: curves} side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = panels or {xlabel: curves}
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False)
    for ax, (title, cv) in zip(axes.flat, panels.items()):
        for name, v in cv.items():
            v = np.sort(np.asarray(v, dtype=float))
            if v.size:
                ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of frames")
        ax.grid(alpha=0.3)
        if len(cv) > 1 or title == xlabel:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _glass_line(name: str, source_fps: float | None, p50: float, p99: float, display_hz: float,
                what: str = "capture->publish") -> tuple[str, dict]:
    if not source_fps:
        return f"glass-to-glass ({name}): source fps unknown, not estimated", {}
    g50 = L.glass_to_glass_ms(source_fps, p50, display_hz)
    g99 = L.glass_to_glass_ms(source_fps, p99, display_hz)
    line = (f"glass-to-glass estimate ({name}): {g50['capture_frame_ms']:.1f} ms capture frame + {what} "
            f"p50 {p50:.1f} / p99 {p99:.1f} ms rounded up to {display_hz:g} Hz vsync "
            f"({g50['processing_vsync_ms']:.1f} / {g99['processing_vsync_ms']:.1f}) + {g50['display_ms']:.1f} ms "
            f"display = p50 {g50['total_ms']:.0f} ms, p99 {g99['total_ms']:.0f} ms")
    return line, {"p50": g50, "p99": g99}


def glass_to_glass_ms(source_fps: float, processing_ms: float, display_hz: float = 60.0) -> float:
    """Total of the glass-to-glass estimate in ms (parts: streamer.latency.glass_to_glass_ms)."""
    return L.glass_to_glass_ms(source_fps, processing_ms, display_hz)["total_ms"]


def cmd_report(args) -> dict:
    """JSON: {RUN.jsonl: {span: stats, ..., "run": {results, skipped, classified_fps, glass_to_glass}}}."""
    out: dict = {}
    panels: dict[str, dict[str, list[float]]] = {}
    for f in args.jsonl:
        res = L.read_results_jsonl(f)
        table = L.stage_table(res, None, args.warmup_frames, args.warmup_seconds, args.include_blank)
        if not table["capture->publish"].get("count"):
            raise UserError(f"{f}: only {len(res)} results, all inside the warm-up "
                            f"(--warmup-frames {args.warmup_frames}); lower it")
        src_fps = (res[-1].get("source") or {}).get("fps")
        blank = sum(not L.model_ran(r) for r in res)
        print(f"\n### {f}\n{len(res)} results ({len(res) - table['capture->publish']['count']} left out: warm-up"
              f"{'' if args.include_blank else f' and {blank} blank frames without inference'}), "
              f"{res[-1].get('skipped_total', 0)} frames skipped, {L.classified_fps(res):.1f} classified fps\n")
        print(L.stage_markdown(table))
        cp = table["capture->publish"]
        line, g2g = _glass_line(Path(f).name, src_fps, cp["p50"], cp["p99"], args.display_hz)
        print("\n" + line)
        out[str(f)] = {**table, "run": {"results": len(res), "skipped": res[-1].get("skipped_total", 0),
                                        "classified_fps": L.classified_fps(res), "glass_to_glass": g2g}}
        for span in L.STAGE_SPANS:
            panels.setdefault(span, {})[Path(f).name] = L.span_values(res, span, args.warmup_frames,
                                                                       args.warmup_seconds, args.include_blank)
    if args.cdf:
        cdf_png({}, args.cdf, "ms", panels)
        print(f"\nCDF plot: {args.cdf}")
    return out


# --- live -------------------------------------------------------------------------------------

def cmd_live(args) -> dict:
    import zmq

    from streamer import schema

    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 100_000)           # keep every message: no CONFLATE, deep queue
    sub.setsockopt(zmq.SUBSCRIBE, schema.topic(schema.RESULT, args.stream or ""))
    sub.setsockopt(zmq.LINGER, 0)
    try:
        sub.connect(args.connect)
    except zmq.ZMQError as exc:
        raise UserError(f"cannot connect to {args.connect}: {exc}") from None
    results, received, foreign = [], [], 0
    end = time.monotonic() + args.duration
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    try:
        while (left := end - time.monotonic()) > 0:
            if not poller.poll(timeout=min(200, left * 1000)):
                continue
            while True:                           # drain: stamp each message as it is taken
                try:
                    msg = sub.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                t_recv = time.monotonic()
                try:
                    _, payload = schema.decode(msg)
                    L.stage_durations_ms(payload)
                except (schema.SchemaError, ValueError):
                    foreign += 1
                    continue
                results.append(payload)
                received.append(t_recv)
    except KeyboardInterrupt:
        pass
    finally:
        sub.close()
    if not results:
        raise UserError(f"no result messages from {args.connect} in {args.duration:g} s "
                        f"(is `sonoplane run --publish {args.connect}` running?)")
    table = L.stage_table(results, received, args.warmup_frames, args.warmup_seconds, args.include_blank)
    if not table["capture->publish"].get("count"):
        raise UserError(f"only {len(results)} results, all inside the warm-up; run longer or lower --warmup-frames")
    print(f"\n### live {args.connect}\n{len(results)} results in {args.duration:g} s, "
          f"{results[-1].get('skipped_total', 0)} skipped by the pipeline, {foreign} undecodable ignored\n")
    print(L.stage_markdown(table))
    cs = table[L.SUBSCRIBER_SPAN]
    line, g2g = _glass_line("live", (results[-1].get("source") or {}).get("fps"), cs["p50"], cs["p99"],
                            args.display_hz, "capture->subscriber")
    print("\n" + line)
    if args.cdf:
        kept, recv = L.drop_warmup(results, args.warmup_frames, args.warmup_seconds, received, args.include_blank)
        per = [L.stage_durations_ms(r, t) for r, t in zip(kept, recv)]
        cdf_png({s: [p[s] for p in per] for s in ("capture->publish", L.SUBSCRIBER_SPAN)}, args.cdf, "live")
    return {"connect": args.connect, "results": len(results), "stages": table, "glass_to_glass": g2g}


# --- compare ----------------------------------------------------------------------------------

def parse_configs(specs: list[str]) -> list[tuple[str, list[str]]]:
    if not specs:
        return [("default", [])]
    configs = []
    for spec in specs:
        name, sep, rest = spec.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--config {spec!r}: expected NAME=\"run args\", e.g. int8=\"--model sononet16_int8\"")
        try:
            extra = shlex.split(rest)
        except ValueError as exc:
            raise UserError(f"--config {spec!r}: {exc}") from None
        bad = [a for a in extra if a.split("=")[0] in RESERVED_FLAGS]
        if bad:
            raise UserError(f"--config {name}: {bad[0]} is set by compare itself")
        if name in (n for n, _ in configs):
            raise UserError(f"--config name {name!r} given twice")
        configs.append((name.strip(), extra))
    return configs


def summarize_runs(runs: list[dict]) -> dict:
    lat = [v for r in runs for v in r["latency_ms"]]
    s = L.summarize(lat)
    mean = lambda k: sum(r[k] for r in runs) / len(runs)  # noqa: E731
    return {"p50": s.get("p50"), "p90": s.get("p90"), "p99": s.get("p99"), "max": s.get("max"),
            "tail": s.get("tail"), "flatness": s.get("flatness"), "n": s["count"],
            "infer_p50": L.summarize(v for r in runs for v in r["infer_ms"]).get("p50"),
            "fps": mean("fps"), "classified": mean("classified"), "skipped": mean("skipped"), "blank": mean("blank"),
            "frames": mean("frames"), "cores": mean("cores"),
            "p50_per_repeat": [L.summarize(r["latency_ms"]).get("p50") for r in runs],
            "stages": {span: L.summarize(v for r in runs for v in r["stage_ms"][span]) for span in L.STAGE_SPANS}}


def _ratio(a, b):
    return a / b if a is not None and b else None


def cmd_compare(args) -> dict:
    video = Path(args.video)
    if not video.is_file():
        raise UserError(f"{video}: no such video file")
    if args.repeat < 1:
        raise UserError("--repeat must be at least 1")
    if args.two_stream and args.video2 and not Path(args.video2).is_file():
        raise UserError(f"{args.video2}: no such video file")
    configs = parse_configs(args.config)
    modes = [m.strip() for m in args.modes.split(",")]
    if not modes or any(m not in MODES for m in modes):
        raise UserError(f"--modes: choose from {', '.join(MODES)} (comma-separated)")
    cap = ["--max-frames", str(args.max_frames)] if args.max_frames else []
    runs: dict[tuple[str, str], list[dict]] = {}
    order = []
    for rep in range(args.repeat):                 # A B A B: drift hits every config alike
        for mode in modes:
            for name, extra in configs:
                print(f"[{rep + 1}/{args.repeat}] {name} {mode} ...", file=sys.stderr, flush=True)
                runs.setdefault((name, mode), []).append(run_once(str(video), extra + cap, mode, args))
                order.append(f"{name}/{mode}")
    ref = configs[0][0]
    summary = {key: summarize_runs(v) for key, v in runs.items()}
    empty = [f"{k[0]}/{k[1]}" for k, v in summary.items() if not v["n"]]
    if empty:
        raise UserError(f"no results left after the warm-up for {', '.join(empty)}: "
                        f"use more frames or a smaller --warmup-frames")
    src_fps = next((r["source_fps"] for v in runs.values() for r in v if r["source_fps"]), None)
    frames = max(s["frames"] for s in summary.values())
    print(f"\n### compare on {video} ({frames:.0f} frames, source {src_fps or '?'} fps); "
          f"{args.repeat} interleaved repeat(s); ratios against '{ref}'\n")
    print("capture->publish in ms after a warm-up of "
          f"{args.warmup_frames} results{f' / {args.warmup_seconds:g} s' if args.warmup_seconds else ''}"
          f"{', blank frames (no inference) included' if args.include_blank else ', over frames the model ran on (blank frames left out)'}; "
          "fps = classified frames per second; latency ratio < 1 and fps ratio > 1 are better\n")
    header = ("config", "mode", "p50", "p90", "p99", "max", "tail", "flat", "infer p50", "fps", "classified",
              "skipped", "blank", "CPU cores", "p50 ratio", "p99 ratio", "fps ratio", "p50 per repeat")
    rows = []
    for mode in modes:
        r = summary[(ref, mode)]
        for name, _ in configs:
            s = summary[(name, mode)]
            rows.append([name, mode, s["p50"], s["p90"], s["p99"], s["max"], s["tail"], s["flatness"],
                         s["infer_p50"], s["fps"], round(s["classified"]), round(s["skipped"]), round(s["blank"]),
                         s["cores"], _ratio(s["p50"], r["p50"]), _ratio(s["p99"], r["p99"]), _ratio(s["fps"], r["fps"]),
                         " / ".join(f"{v:.1f}" for v in s["p50_per_repeat"] if v is not None)])
    print(L.markdown_table(header, rows))
    report: dict = {"video": str(video), "source_fps": src_fps, "repeat": args.repeat, "run_order": order,
                    "reference": ref, "configs": {n: e for n, e in configs},
                    "summary": {f"{k[0]}/{k[1]}": v for k, v in summary.items()}}
    print("\nper stage, pooled over the repeats: p50 / p99 in ms (capture->preprocess includes the time the "
          "frame waited in the latest-frame slot while the previous one was processed)\n")
    print(L.markdown_table(("config", "mode") + L.STAGE_SPANS,
                           [[n, m] + [f"{summary[(n, m)]['stages'][sp]['p50']:.1f} / "
                                      f"{summary[(n, m)]['stages'][sp]['p99']:.1f}" for sp in L.STAGE_SPANS]
                            for m in modes for n, _ in configs]))
    if "native" in modes:
        s = summary[(ref, "native")]
        line, report["glass_to_glass"] = _glass_line(f"{ref}, native", src_fps, s["p50"], s["p99"], args.display_hz)
        print("\n" + line)
    if args.cdf:
        panels = {f"capture->publish, {m}": {n: [v for r in runs[(n, m)] for v in r["latency_ms"]] for n, _ in configs}
                  for m in modes}
        cdf_png({}, args.cdf, "ms", panels)
        print(f"\nCDF plot: {args.cdf}")
    if args.baseline:
        report["seed_baseline"] = baseline_section(str(video), args, summary, ref, modes)
    if args.two_stream:
        report["two_stream"] = two_stream(str(video), args.video2 or str(video), configs[0][1] + cap, modes, args)
    return report


def baseline_section(video: str, args, summary: dict, ref: str, modes: list[str]) -> dict:
    from seed_baseline import format_baseline, run_baseline

    print(f"\n[baseline] seed-style pipeline on the first {args.baseline_frames} frames ...", file=sys.stderr, flush=True)
    b = run_baseline(video, args.baseline_frames)
    print("\n" + format_baseline(b))
    out = {**b}
    lines = []
    if "fast" in modes:
        out["throughput_ratio"] = summary[(ref, "fast")]["fps"] / b["fps"]
        lines.append(f"throughput ('{ref}' --fast fps / baseline fps): x{out['throughput_ratio']:.1f}")
    lat_mode = "native" if "native" in modes else "fast"
    out["latency_ratio"] = b["per_frame_ms"]["p50"] / summary[(ref, lat_mode)]["p50"]
    out["latency_ratio_mode"] = lat_mode
    lines.append(f"per-frame latency (baseline p50 / '{ref}' {lat_mode} capture->publish p50): "
                 f"x{out['latency_ratio']:.1f}")
    print("\nspeed-up of sonoplane over the seed-style baseline, same video, this run: " + "; ".join(lines))
    return out


def two_stream(video_a: str, video_b: str, extra: list[str], modes: list[str], args) -> dict:
    """Two `sonoplane run` processes at once (own ports and stream ids); per-stream figures."""
    out: dict = {}
    rows = []
    for mode in modes:
        print(f"[two-stream] {mode} ...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            streams = {"a": video_a, "b": video_b}
            records = {sid: Path(tmp) / f"{sid}.jsonl" for sid in streams}
            procs = {sid: MeasuredProcess(sonoplane_cmd(v, extra, records[sid], mode, stream_id=sid), ROOT, _env())
                     for sid, v in streams.items()}
            infos = {sid: p.wait(args.run_timeout) for sid, p in procs.items()}
            for sid, info in infos.items():
                _check_run(info, f"two-stream run {sid} ({mode})")
                m = run_metrics(L.read_results_jsonl(records[sid]), info, args)
                s = summarize_runs([m])
                out[f"{sid}/{mode}"] = s | {"video": streams[sid]}
                rows.append([sid, Path(streams[sid]).name, mode, s["p50"], s["p99"], s["max"], s["infer_p50"],
                             s["fps"], round(s["classified"]), round(s["skipped"]), s["cores"]])
    print(f"\n### two streams at once (config '{' '.join(extra) or 'default'}')\n")
    print(L.markdown_table(("stream", "video", "mode", "p50", "p99", "max", "infer p50", "fps", "classified",
                            "skipped", "CPU cores"), rows))
    return out


# --- main -------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", help="write all figures as JSON here")
    common.add_argument("--cdf", help="write a CDF plot (PNG) here")
    common.add_argument("--warmup-frames", type=int, default=L.DEFAULT_WARMUP_FRAMES,
                        help=f"drop the first N results (default {L.DEFAULT_WARMUP_FRAMES})")
    common.add_argument("--warmup-seconds", type=float, default=0.0, help="also drop results in the first S s")
    common.add_argument("--display-hz", type=float, default=60.0, help="display refresh for glass-to-glass")
    common.add_argument("--include-blank", action="store_true",
                        help="keep blank frames (no inference, ~5 ms) in the latency figures")
    sub = ap.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("report", parents=[common], help="tables from `sonoplane run --record` files")
    r.add_argument("jsonl", nargs="+")
    lv = sub.add_parser("live", parents=[common], help="subscribe to a running pipeline")
    lv.add_argument("--connect", default="tcp://127.0.0.1:5555")
    lv.add_argument("--duration", type=float, default=20.0)
    lv.add_argument("--stream", help="only this stream id")
    c = sub.add_parser("compare", parents=[common], help="configurations side by side on one video")
    c.add_argument("--video", required=True)
    c.add_argument("--config", action="append", default=[], metavar="NAME=ARGS",
                   help="a configuration: name=extra `sonoplane run` args; the first is the reference")
    c.add_argument("--repeat", type=int, default=2, help="interleaved repeats (default 2: A B A B)")
    c.add_argument("--modes", default="native,fast", help="native,fast (default both)")
    c.add_argument("--max-frames", type=int, help="cap each run at N captured frames")
    c.add_argument("--baseline", action="store_true", help="also run the seed-style baseline")
    c.add_argument("--baseline-frames", type=int, default=20)
    c.add_argument("--two-stream", action="store_true", help="also run two pipelines at once")
    c.add_argument("--video2", help="second stream's video for --two-stream (default: --video)")
    c.add_argument("--run-timeout", type=float, default=900.0, help="seconds before a run is killed")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = {"report": cmd_report, "live": cmd_live, "compare": cmd_compare}[args.mode](args)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    except UserError as exc:
        print(f"latency_report: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

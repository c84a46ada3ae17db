#!/usr/bin/env python3
"""Raw per-frame model outputs (pre-softmax logits, open-set distance) for offline open-set studies.

A recorded run (`tools/bench_video.py --save-results DIR`) keeps only the top-3 probabilities and the
distance of one model. Scores that need every logit (energy), a second plane model (ensembles) or a
second opinion (SonoNet16) are computed here on the SAME model inputs the runtime had: the video is
decoded as the capture does (PyAV, the Y plane of limited-range YUV 4:2:0), each frame is cut with the
crop the run recorded for it, then the runtime's halvings + Preprocessor + ONNX Runtime. Frames the run
saw as blank (no top-k) are kept blank. The recorded model's distance and top-1 probability are compared
with the recomputed ones and the largest differences printed (they should be rounding only).

    # sweeps: every frame through each --models model; --cadence-model only on the first frame of each
    # --cadence-s cell of media time (a slow second opinion run on a media-time cadence)
    python tools/frame_outputs.py --video S.mp4 --results R.jsonl --models planes_lite0 planes_lite0_sono \\
        --cadence-model sononet16 --cadence-s 0.2 --out S.npz
    # stills: every FETAL_PLANES_DB image (training and validation, marked) through the runtime crop
    python tools/frame_outputs.py --stills --models planes_lite0 planes_lite0_sono sononet16 --out stills.npz

Output (.npz): per model M `logits__M` (N, C) float32 (NaN where not run) and `open_set__M` (N,) (NaN without
an open-set output), `infer_ms__M` (N,) the ONNX Runtime call's time; `meta` (JSON: models' labels, coarse maps,
temperatures, open-set fits); sweeps: `frame`, `t_media`, `blank`, `frozen`; stills: `name`, `patient`,
`coarse`, `fine`, `validation`. tools/open_set_levers.py reads these files.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.crop import CropRect  # noqa: E402
from engines.downscale import halve_times  # noqa: E402


class ModelRunner:
    """One model through the runtime's preprocessing and backend; logits, distance and time per call."""

    def __init__(self, name: str, threads: int):
        from streamer.infer import PlaneClassifier
        self.clf = PlaneClassifier(name, threads=threads)
        self.info = self.clf.info
        self.name = name

    def __call__(self, roi: np.ndarray, luma_range: str | None) -> tuple[np.ndarray, float, float]:
        pre = self.clf.preprocess
        x = pre(halve_times(roi, pre.halvings(roi.shape[1], roi.shape[0])), luma_range=luma_range)
        t0 = time.perf_counter()
        out = self.clf.backend.infer(x)
        ms = (time.perf_counter() - t0) * 1e3
        return out.logits[0], (np.nan if out.open_set is None else float(out.open_set[0])), ms

    def meta(self) -> dict:
        i = self.info
        return {"model_id": i.model_id, "labels": list(i.labels), "coarse_map": dict(i.coarse_map),
                "temperature": i.temperature, "open_set": i.open_set}


def _arrays(runners: list[ModelRunner], n: int) -> dict:
    out = {}
    for r in runners:
        out[f"logits__{r.name}"] = np.full((n, len(r.info.labels)), np.nan, np.float32)
        out[f"open_set__{r.name}"] = np.full(n, np.nan, np.float64)
        out[f"infer_ms__{r.name}"] = np.full(n, np.nan, np.float64)
    return out


def _put(arrs: dict, r: ModelRunner, i: int, res) -> None:
    logits, dist, ms = res
    arrs[f"logits__{r.name}"][i] = logits
    arrs[f"open_set__{r.name}"][i] = dist
    arrs[f"infer_ms__{r.name}"][i] = ms


def sweep(video: str, results: str, models: list[str], cadence_model: str | None, cadence_s: float,
          threads: int, max_frames: int | None = None) -> tuple[dict, dict]:
    from streamer.sources import open_source
    rec = {r["frame"]: r for r in map(json.loads, filter(str.strip, Path(results).read_text().splitlines()))
           if r.get("kind", "result") == "result"}
    if not rec:
        raise SystemExit(f"{results}: no result messages")
    runners = [ModelRunner(m, threads) for m in models]
    cadence = ModelRunner(cadence_model, threads) if cadence_model else None
    n = max(rec) + 1 if max_frames is None else min(max(rec) + 1, max_frames)
    arrs = _arrays(runners + ([cadence] if cadence else []), n)
    frame_no = np.arange(n)
    t_media = np.full(n, np.nan)
    blank = np.ones(n, bool)                 # frames the run did not classify count as blank
    frozen = np.zeros(n, bool)
    recorded = runners[0].name if runners else None
    diff_d, diff_p = [], []
    last_cell = None
    src = open_source(video, yuv420=True)
    try:
        for f in src.frames():
            i = f.index
            if i >= n:
                break
            r = rec.get(i)
            t = f.pts_s if f.pts_s is not None else i / 30.0
            t_media[i] = t
            if r is None or not r["topk"]:
                continue
            blank[i], frozen[i] = False, bool(r["flags"].get("frozen"))
            if f.planes is not None:
                image, luma_range = f.planes[0], "limited"
            else:
                image, luma_range = f.image, None
            roi = CropRect(*r["crop"]).apply(image)
            for run in runners:
                res = run(roi, luma_range)
                _put(arrs, run, i, res)
                if run.name == recorded and r.get("open_set") is not None and r["model"]["id"] == run.info.model_id:
                    from streamer.infer import softmax_with_temperature
                    diff_d.append(abs(res[1] - r["open_set"]))
                    diff_p.append(abs(float(softmax_with_temperature(res[0], run.info.temperature).max())
                                      - r["topk"][0][1]))
            cell = int(np.floor(t / cadence_s + 1e-9)) if cadence else None
            if cadence and cell != last_cell:
                _put(arrs, cadence, i, cadence(roi, luma_range))
                last_cell = cell
    finally:
        src.close()
    if diff_d:
        print(f"{Path(video).name}: {len(diff_d)} frames; recomputed vs recorded {recorded}: open-set distance max |diff| "
              f"{max(diff_d):.3f}, top-1 probability max |diff| {max(diff_p):.5f}")
    meta = {"kind": "sweep", "video": str(video), "results": str(results), "cadence_s": cadence_s if cadence else None,
            "cadence_model": cadence_model, "models": {r.name: r.meta() for r in runners + ([cadence] if cadence else [])}}
    return {**arrs, "frame": frame_no, "t_media": t_media, "blank": blank, "frozen": frozen}, meta


def stills(models: list[str], data: str | None, threads: int) -> tuple[dict, dict]:
    from engines import data as D
    samples = D.load_index(data or D.DEFAULT_DATA)
    val_patients = D.read_val_patients()
    runners = [ModelRunner(m, threads) for m in models]
    arrs = _arrays(runners, len(samples))
    for i, s in enumerate(samples):
        roi = D.runtime_roi(D.read_frame(s))
        for run in runners:
            _put(arrs, run, i, run(roi, None))
    meta = {"kind": "stills", "data": str(data or D.DEFAULT_DATA), "models": {r.name: r.meta() for r in runners}}
    return {**arrs, "name": np.array([Path(s.path).stem for s in samples]),
            "patient": np.array([s.patient for s in samples]), "coarse": np.array([s.coarse for s in samples]),
            "fine": np.array([s.fine for s in samples]),
            "validation": np.array([s.patient in val_patients for s in samples])}, meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", help="a sweep video (with --results: the run's recorded crops)")
    ap.add_argument("--results", help="the recorded run of --video (bench_video.py --save-results DIR/NAME.jsonl)")
    ap.add_argument("--stills", action="store_true", help="every FETAL_PLANES_DB image instead of a video")
    ap.add_argument("--data", default=None, help="FETAL_PLANES_DB folder (default ../shared/data/fetal_planes)")
    ap.add_argument("--models", nargs="+", default=["planes_lite0"], help="run on every frame / image")
    ap.add_argument("--cadence-model", default=None, help="sweeps: run on the first frame of each --cadence-s cell")
    ap.add_argument("--cadence-s", type=float, default=0.2)
    ap.add_argument("--max-frames", type=int, default=None, help="sweeps: the first N frames only")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True, help="output .npz")
    args = ap.parse_args(argv)
    if args.stills == bool(args.video):
        ap.error("give --stills, or --video with --results")
    if args.video and not args.results:
        ap.error("--video needs --results (the recorded crops)")
    if args.cadence_s <= 0:
        ap.error("--cadence-s must be > 0")
    from engines.errors import SourceError, UserError
    try:
        arrs, meta = (stills(args.models, args.data, args.threads) if args.stills else
                      sweep(args.video, args.results, args.models, args.cadence_model, args.cadence_s, args.threads,
                            args.max_frames))
    except (OSError, ValueError, KeyError, UserError, SourceError) as exc:   # missing / unreadable input, unknown model
        raise SystemExit(f"frame_outputs: {exc}") from None
    np.savez_compressed(args.out, meta=np.array(json.dumps(meta)), **arrs)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Build a labelled scan-session video from still images, with ground truth beside it.

A scanner-like screen (vendor UI text with a fake patient name and date, grey-scale bar, depth
ruler) shows each still for a few seconds with probe-like drift, zoom, gain change and speckle
that moves with the tissue; short blurred transitions join the planes; a frozen stretch (scanner
FREEZE) and a probe-lifted (blank) stretch are included. Encoded as H.264 with FFmpeg (PyAV).

Ground truth CSV: `frame,t_s,kind,plane,brain_plane,source`; kind is stable | transition |
frozen | blank; plane uses FETAL_PLANES_DB names or is empty.

    # 720p30 sweep from validation patients of FETAL_PLANES_DB
    python tools/make_sweep.py --images ../shared/data/fetal_planes/labels.csv \
        --patients engines/splits/fetal_planes_val_patients.txt --per-plane 2 \
        --size 1280x720 --fps 30 --out /tmp/sweep720.mp4 --labels /tmp/sweep720.csv
"""
from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

PLANES = ("Fetal brain", "Fetal abdomen", "Fetal femur", "Fetal thorax", "Maternal cervix", "Other")
# SonoNet example file stem -> FETAL_PLANES_DB plane name (for --sononet-examples).
SONONET_EXAMPLE_PLANES = {
    "BRAIN-TV": ("Fetal brain", "Trans-thalamic"), "BRAIN-CB": ("Fetal brain", "Trans-cerebellum"),
    "ABDOMINAL": ("Fetal abdomen", ""), "FEMUR": ("Fetal femur", ""), "4CH": ("Fetal thorax", ""),
    "3VV": ("Fetal thorax", ""), "LVOT": ("Fetal thorax", ""), "RVOT": ("Fetal thorax", ""),
}
SONONET_IMAGE_REGION = (81, 115, 874, 734)  # x0, y0, x1, y1 in the 975x735 frames
HEADER = ("kind", "plane", "brain_plane", "source")
# --planes also takes short names: long Other / cervix stretches for the open-set benches.
PLANE_ALIASES = {"brain": "Fetal brain", "abdomen": "Fetal abdomen", "femur": "Fetal femur",
                 "thorax": "Fetal thorax", "cervix": "Maternal cervix", "other": "Other"}


def plane_name(text: str) -> str:
    """A FETAL_PLANES_DB plane name from itself or a short alias (brain ... cervix, other)."""
    for name in PLANES:
        if text.strip().lower() == name.lower():
            return name
    if text.strip().lower() in PLANE_ALIASES:
        return PLANE_ALIASES[text.strip().lower()]
    raise argparse.ArgumentTypeError(f"unknown plane {text!r} (use {', '.join(PLANE_ALIASES)} "
                                     f"or a FETAL_PLANES_DB name: {', '.join(PLANES)})")


@dataclass
class Still:
    image: np.ndarray        # gray uint8, the ultrasound image only
    plane: str
    brain_plane: str
    source: str
    full_screen: np.ndarray | None = None  # a real scanner frame (UI included), BGR


def load_fetal_planes(csv_path: Path, planes: list[str], per_plane: int, patients: set[int] | None,
                      rng: np.random.Generator, files: list[str] | None = None) -> list[Still]:
    root = csv_path.parent
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if files:
        wanted = {Path(x).name for x in files}
        rows = [r for r in rows if Path(r["file"]).name in wanted]
        rows.sort(key=lambda r: files.index(next(x for x in files if Path(x).name == Path(r["file"]).name)))
        chosen = rows
    else:
        chosen = []
        for plane in planes:
            cand = [r for r in rows if r["Plane"] == plane and
                    (patients is None or int(r["Patient_num"]) in patients)]
            if not cand:
                continue
            idx = rng.choice(len(cand), size=min(per_plane, len(cand)), replace=False)
            chosen += [cand[i] for i in idx]
    stills = []
    for r in chosen:
        img = cv2.imread(str(root / r["file"]), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise SystemExit(f"cannot read {root / r['file']}")
        if r.get("copy") == "resized640":
            # The public 640x640 copies are stretched; originals are ~1.4:1 wide.
            img = cv2.resize(img, (int(img.shape[0] * 1.4), img.shape[0]), interpolation=cv2.INTER_AREA)
        bp = r.get("Brain_plane", "")
        stills.append(Still(img, r["Plane"], bp if r["Plane"] == "Fetal brain" else "", Path(r["file"]).name))
    return stills


def load_sononet_examples(folder: Path, names: list[str]) -> list[Still]:
    stills = []
    for name in names:
        frame = cv2.imread(str(folder / f"{name}.png"))
        if frame is None:
            raise SystemExit(f"cannot read {folder / name}.png")
        x0, y0, x1, y1 = SONONET_IMAGE_REGION
        plane, bp = SONONET_EXAMPLE_PLANES[name]
        stills.append(Still(cv2.cvtColor(frame[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY), plane, bp,
                            f"sononet/{name}.png", full_screen=frame))
    return stills


class Screen:
    """The scanner-like screen: static UI drawn once, an image region the stills go into."""

    def __init__(self, width: int, height: int, fps: float, seed: int):
        self.w, self.h, self.fps = width, height, fps
        s = height / 720.0
        self.region = (int(0.14 * width), int(0.11 * height), int(0.80 * width), int(0.97 * height))
        ui = np.full((height, width, 3), 12, np.uint8)
        font, th = cv2.FONT_HERSHEY_SIMPLEX, max(1, int(round(s)))
        cv2.rectangle(ui, (0, 0), (width, int(0.075 * height)), (48, 44, 40), -1)
        cv2.putText(ui, "DOE^JANE  ID 0042-1178  GA 21w3d", (int(0.01 * width), int(0.05 * height)),
                    font, 0.6 * s, (230, 230, 230), th, cv2.LINE_AA)
        cv2.putText(ui, "22/11/2026 14:03:27", (int(0.72 * width), int(0.05 * height)),
                    font, 0.6 * s, (230, 230, 230), th, cv2.LINE_AA)
        for i, line in enumerate(("C1-5 OB", "Gn 52", "DR 60", "FR 30Hz", "MI 0.9", "TIS 0.3")):
            cv2.putText(ui, line, (int(0.84 * width), int((0.16 + 0.05 * i) * height)), font, 0.5 * s,
                        (200, 200, 200), th, cv2.LINE_AA)
        # Grey-scale bar (left) and a depth ruler (right of the image).
        bar = np.linspace(255, 0, int(0.4 * height)).astype(np.uint8)[:, None]
        bx, by = int(0.03 * width), int(0.2 * height)
        ui[by:by + len(bar), bx:bx + int(0.012 * width)] = bar[:, :, None]
        rx = self.region[2] + int(0.01 * width)
        for k, y in enumerate(np.linspace(self.region[1], self.region[3], 11).astype(int)):
            cv2.line(ui, (rx, y), (rx + (12 if k % 5 == 0 else 6), y), (180, 180, 180), th)
        self.ui = ui
        rng = np.random.default_rng(seed)
        rw, rh = self.region[2] - self.region[0], self.region[3] - self.region[1]
        # A speckle field bigger than the region, warped with the tissue so it moves with it.
        self.speckle = rng.rayleigh(1.0, size=(rh + 64, rw + 64)).astype(np.float32)
        self.rng = rng

    def fit(self, img: np.ndarray) -> np.ndarray:
        """Letterbox a still into the image region (aspect kept)."""
        rw, rh = self.region[2] - self.region[0], self.region[3] - self.region[1]
        k = min(rw / img.shape[1], rh / img.shape[0])
        small = cv2.resize(img, (max(1, int(img.shape[1] * k)), max(1, int(img.shape[0] * k))),
                           interpolation=cv2.INTER_AREA)
        canvas = np.zeros((rh, rw), np.uint8)
        y, x = (rh - small.shape[0]) // 2, (rw - small.shape[1]) // 2
        canvas[y:y + small.shape[0], x:x + small.shape[1]] = small
        return canvas

    def probe_view(self, base: np.ndarray, t: float, phase: float) -> np.ndarray:
        """The still as a moving probe would show it at time t (float32 0..255)."""
        rh, rw = base.shape
        dx = 0.02 * rw * np.sin(0.7 * t + phase) + 0.01 * rw * np.sin(2.3 * t)
        dy = 0.015 * rh * np.sin(0.9 * t + 2 * phase)
        angle = 2.0 * np.sin(0.5 * t + phase)
        zoom = 1.0 + 0.04 * np.sin(0.33 * t + phase)
        m = cv2.getRotationMatrix2D((rw / 2, rh / 2), angle, zoom)
        m[:, 2] += (dx, dy)
        img = cv2.warpAffine(base.astype(np.float32), m, (rw, rh), flags=cv2.INTER_LINEAR)
        ms = m.copy()
        ms[:, 2] += 32 - (m[:, :2] @ np.array([32.0, 32.0]))  # same motion on the padded speckle
        sp = cv2.warpAffine(self.speckle, ms, (rw + 64, rh + 64), flags=cv2.INTER_LINEAR)[32:32 + rh, 32:32 + rw]
        gain = 1.0 + 0.12 * np.sin(0.21 * t + phase)
        fresh = self.rng.normal(0.0, 4.0, size=img.shape).astype(np.float32)
        return np.clip(img * (0.55 + 0.45 * sp) * gain + fresh, 0, 255)

    def compose(self, image: np.ndarray | None, freeze: bool = False) -> np.ndarray:
        frame = self.ui.copy()
        x0, y0, x1, y1 = self.region
        if image is not None:
            frame[y0:y1, x0:x1] = np.clip(image, 0, 255).astype(np.uint8)[:, :, None]
        if freeze:
            cv2.putText(frame, "FREEZE", (int(0.84 * self.w), int(0.9 * self.h)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.8 * self.h / 720, (80, 200, 255), max(1, self.h // 360), cv2.LINE_AA)
        return frame

    def full_screen(self, still: Still, t: float, phase: float) -> np.ndarray:
        """A real scanner frame (SonoNet examples): the whole screen scaled, motion in its image region."""
        frame = still.full_screen.copy()
        x0, y0, x1, y1 = SONONET_IMAGE_REGION
        region = frame[y0:y1, x0:x1]
        gray = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
        saved = (self.speckle, self.region)
        self.speckle = cv2.resize(self.speckle, (gray.shape[1] + 64, gray.shape[0] + 64))
        moved = self.probe_view(gray, t, phase)
        self.speckle = saved[0]
        frame[y0:y1, x0:x1] = moved.astype(np.uint8)[:, :, None]
        # Letterbox (aspect kept): a frame grabber shows a 4:3 scanner screen pillar-boxed.
        k = min(self.w / frame.shape[1], self.h / frame.shape[0])
        fw, fh = int(frame.shape[1] * k), int(frame.shape[0] * k)
        out = np.zeros((self.h, self.w, 3), np.uint8)
        x, y = (self.w - fw) // 2, (self.h - fh) // 2
        out[y:y + fh, x:x + fw] = cv2.resize(frame, (fw, fh), interpolation=cv2.INTER_AREA)
        return out


def render(stills: list[Still], screen: Screen, hold: float, transition: float, frozen: float,
           blank: float):
    """Yield (frame_bgr, kind, plane, brain_plane, source)."""
    fps = screen.fps
    t = 0.0
    prev: np.ndarray | None = None
    frozen_at = len(stills) // 2          # freeze in the middle, blank near the end
    blank_at = max(0, len(stills) - 1)
    for i, still in enumerate(stills):
        base = screen.fit(still.image)
        phase = 1.7 * i

        def frame_at(tt: float) -> np.ndarray:
            if still.full_screen is not None:
                return screen.full_screen(still, tt, phase)
            return screen.compose(screen.probe_view(base, tt, phase))

        first = frame_at(t)
        if prev is not None and transition > 0:
            n = max(1, int(round(transition * fps)))
            for k in range(n):
                a = (k + 1) / (n + 1)
                mix = cv2.addWeighted(prev, 1 - a, first, a, 0)
                ksize = max(3, int(0.03 * screen.w * np.sin(np.pi * a)) | 1)
                yield cv2.blur(mix, (ksize, 1)), "transition", "", "", ""
                t += 1 / fps
        if i == blank_at and blank > 0:
            for _ in range(int(round(blank * fps))):
                noise = screen.rng.normal(3.0, 2.0, size=(screen.region[3] - screen.region[1],
                                                         screen.region[2] - screen.region[0]))
                yield screen.compose(noise), "blank", "", "", ""
                t += 1 / fps
        n_hold = int(round(hold * fps))
        frame = first
        for k in range(n_hold):
            frame = first if k == 0 else frame_at(t)
            yield frame, "stable", still.plane, still.brain_plane, still.source
            t += 1 / fps
        if i == frozen_at and frozen > 0:
            x0, y0, x1, y1 = screen.region
            held = screen.compose(frame[y0:y1, x0:x1, 0].astype(np.float32), freeze=True) \
                if still.full_screen is None else frame
            for _ in range(int(round(frozen * fps))):
                yield held, "frozen", still.plane, still.brain_plane, still.source
                t += 1 / fps
        prev = frame


def encode(frames, out: Path, labels: Path, fps: float, crf: int) -> int:
    import av

    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with av.open(str(out), "w") as container, open(labels, "w", newline="") as fcsv:
        stream = None
        writer = csv.writer(fcsv)
        writer.writerow(["frame", "t_s"] + list(HEADER))
        for frame, kind, plane, bp, source in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=int(round(fps)))
                stream.width, stream.height = frame.shape[1], frame.shape[0]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf), "preset": "medium", "g": str(int(2 * fps))}
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
            writer.writerow([n, f"{n / fps:.4f}", kind, plane, bp, source])
            n += 1
            if n % 100 == 0:
                print(f"\r{n} frames", end="", file=sys.stderr)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    print(f"\r{n} frames -> {out} ({out.stat().st_size / 1e6:.2f} MB), labels {labels}", file=sys.stderr)
    return n


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    w, h = int(w), int(h)
    if w % 2 or h % 2:
        raise argparse.ArgumentTypeError("width and height must be even (yuv420p)")
    return w, h


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, help="FETAL_PLANES_DB labels.csv (../shared/data/fetal_planes/labels.csv)")
    ap.add_argument("--files", nargs="*", help="exact image file names from --images, in this order")
    ap.add_argument("--sononet-examples", type=Path, help="folder of the SonoNet example frames")
    ap.add_argument("--sononet-names", nargs="*", default=["BRAIN-TV", "ABDOMINAL", "FEMUR", "4CH"])
    ap.add_argument("--planes", nargs="*", type=plane_name, default=list(PLANES[:4]),
                    help="planes to draw: brain abdomen femur thorax cervix other, or FETAL_PLANES_DB names")
    ap.add_argument("--per-plane", type=int, default=1)
    ap.add_argument("--patients", type=Path, help="text file of patient numbers to draw from (one a line, # comments)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=parse_size, default=(1280, 720))
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--hold", type=float, default=4.0, help="seconds each still is held")
    ap.add_argument("--transition", type=float, default=0.6)
    ap.add_argument("--frozen", type=float, default=2.0)
    ap.add_argument("--blank", type=float, default=2.0)
    ap.add_argument("--crf", type=int, default=26)
    ap.add_argument("--shuffle", action="store_true", help="shuffle the still order")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--labels", type=Path, help="ground-truth CSV (default: OUT with .csv)")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    patients = None
    if args.patients:
        patients = {int(x.split()[0]) for x in args.patients.read_text().splitlines()
                    if x.strip() and not x.lstrip().startswith("#")}
    stills: list[Still] = []
    if args.images:
        stills += load_fetal_planes(args.images, args.planes, args.per_plane, patients, rng, args.files)
    if args.sononet_examples:
        stills += load_sononet_examples(args.sononet_examples, args.sononet_names)
    if not stills:
        ap.error("no stills: give --images and/or --sononet-examples")
    if args.shuffle:
        stills = [stills[i] for i in rng.permutation(len(stills))]
    screen = Screen(args.size[0], args.size[1], args.fps, args.seed)
    frames = render(stills, screen, args.hold, args.transition, args.frozen, args.blank)
    encode(frames, args.out, args.labels or args.out.with_suffix(".csv"), args.fps, args.crf)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

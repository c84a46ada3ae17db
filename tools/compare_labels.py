#!/usr/bin/env python3
"""Label agreement between two runs of the same videos (`tools/bench_video.py --save-results DIR`).

    python tools/compare_labels.py REFERENCE_DIR OTHER_DIR [--json OUT.json]

Per video (the .jsonl files both directories hold) and overall, on the frames both runs classified:
the shown plane, the shown fine label, and the fine label on the frames the reference shows as
brain (the brain sub-plane: what `--subplane-every` may change against the every-frame refiner).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load(path: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["frame"]: r for r in rows if r.get("kind", "result") == "result"}


def agreement(ref: dict[int, dict], other: dict[int, dict]) -> dict:
    common = sorted(set(ref) & set(other))
    brain = [f for f in common if ref[f]["plane"] == "brain"]
    same = lambda frames, key: sum(ref[f][key] == other[f][key] for f in frames)   # noqa: E731
    return {"frames": len(common), "plane_same": same(common, "plane"), "label_same": same(common, "label"),
            "brain_frames": len(brain), "brain_label_same": same(brain, "label")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference")
    ap.add_argument("other")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    a, b = Path(args.reference), Path(args.other)
    for d in (a, b):
        if not d.is_dir():
            print(f"error: not a directory: {d}", file=sys.stderr)
            return 2
    names = sorted({p.name for p in a.glob("*.jsonl")} & {p.name for p in b.glob("*.jsonl")})
    if not names:
        print(f"error: no .jsonl file in both {a} and {b}", file=sys.stderr)
        return 2
    rows = {n: agreement(load(a / n), load(b / n)) for n in names}
    total = {k: sum(r[k] for r in rows.values()) for k in next(iter(rows.values()))}
    print("| video | frames in both | plane same % | fine label same % | reference brain frames | "
          "brain sub-plane same % |")
    print("|---|---|---|---|---|---|")
    pct = lambda n, d: f"{100.0 * n / d:.2f}" if d else "—"   # noqa: E731
    for name, r in [*rows.items(), ("all", total)]:
        print(f"| {name} | {r['frames']} | {pct(r['plane_same'], r['frames'])} | {pct(r['label_same'], r['frames'])} "
              f"| {r['brain_frames']} | {pct(r['brain_label_same'], r['brain_frames'])} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"videos": rows, "all": total}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`sonoplane models`: the shipped models and what their metadata says."""
from __future__ import annotations

import json


def main(args) -> int:
    from engines import zoo
    from engines.metadata import read_model_info

    rows = []
    for name in zoo.available():
        info = read_model_info(zoo.resolve(name))
        rows.append({"name": name, "model_id": info.model_id, "task": info.task,
                     "input": f"{info.channels}x{info.height}x{info.width}", "classes": len(info.labels),
                     "size_mb": round(info.path.stat().st_size / 1e6, 2), "sha256": info.short_hash,
                     "default": name in (zoo.DEFAULT_PLANE_MODEL, zoo.DEFAULT_ANOMALY_MODEL),
                     "metrics": info.extra.get("metrics"), "license": info.extra.get("license")})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'name':<22} {'task':<8} {'input':<12} {'classes':>7} {'MB':>6}  sha256        default")
    for r in rows:
        print(f"{r['name']:<22} {r['task']:<8} {r['input']:<12} {r['classes']:>7} {r['size_mb']:>6}  "
              f"{r['sha256']}  {'*' if r['default'] else ''}")
    print("model cards: engines/zoo/<name>.md")
    return 0


def register(sub) -> None:
    p = sub.add_parser("models", help="list the shipped models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)

"""`sonoplane report DIR`: the exam report (DIR/report.html) from DIR/exam.json."""
from __future__ import annotations


def main(args) -> int:
    from ..exam.report import write_report

    print(write_report(args.dir).resolve())
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="write DIR/report.html (self-contained) from an exam folder",
                       description="DIR: an --exam-dir of `sonoplane run --exam`.")
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(func=main)

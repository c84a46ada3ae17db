"""Exam protocols: the required views of an exam, as a small TOML file (read with tomllib).

    name = "fetal-planes-4"
    title = "..."
    [[views]]
    id = "brain"            # short, unique; used by the control endpoint and file names
    title = "Fetal brain"   # shown to the operator
    plane = "brain"         # coarse plane (engines.planes.COARSE_PLANES)
    labels = ["Brain (Tt.)"]  # optional: the model's fine labels that satisfy the view
    keep = 2                # optional: best captures kept (default 1)

Shipped protocols live in streamer/exam/protocols/NAME.toml; `--exam` takes a NAME or a PATH.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from engines.errors import UserError
from engines.planes import COARSE_PLANES

PROTOCOL_DIR = Path(__file__).parent / "protocols"
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class View:
    id: str
    title: str
    plane: str
    labels: tuple[str, ...] = ()
    keep: int = 1

    def matches(self, plane: str | None, label: str | None) -> bool:
        """Does a (plane, fine label) pair show this view?"""
        return plane == self.plane and (not self.labels or label in self.labels)


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    views: tuple[View, ...]
    path: str

    def view(self, view_id: str) -> View | None:
        return next((v for v in self.views if v.id == view_id), None)


def shipped_protocols() -> list[str]:
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.toml"))


def load_protocol(name_or_path: str | Path) -> Protocol:
    """A shipped name or a TOML path -> Protocol; any mistake is one UserError line."""
    text = str(name_or_path)
    path = Path(text)
    if not path.suffix and not path.exists():
        path = PROTOCOL_DIR / f"{text}.toml"
        if not path.is_file():
            raise UserError(f"unknown exam protocol {text!r} (shipped: {', '.join(shipped_protocols())}; "
                            "or give a .toml path)")
    if not path.is_file():
        raise UserError(f"exam protocol file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    return protocol_from_dict(data, str(path))


def protocol_from_dict(data: dict, where: str = "<protocol>") -> Protocol:
    views_raw = data.get("views")
    if not isinstance(views_raw, list) or not views_raw:
        raise UserError(f"{where}: a protocol needs at least one [[views]] entry")
    views, seen = [], set()
    for n, v in enumerate(views_raw, 1):
        if not isinstance(v, dict):
            raise UserError(f"{where}: view {n} is not a table")
        vid, plane = v.get("id"), v.get("plane")
        if not isinstance(vid, str) or not _ID.match(vid):
            raise UserError(f"{where}: view {n}: id must be 1-32 of a-z 0-9 _ - (got {vid!r})")
        if vid in seen:
            raise UserError(f"{where}: view id {vid!r} appears twice")
        seen.add(vid)
        if plane not in COARSE_PLANES:
            raise UserError(f"{where}: view {vid!r}: plane must be one of {', '.join(COARSE_PLANES)} (got {plane!r})")
        labels = v.get("labels", [])
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise UserError(f"{where}: view {vid!r}: labels must be a list of strings")
        keep = v.get("keep", 1)
        if not isinstance(keep, int) or not 1 <= keep <= 10:
            raise UserError(f"{where}: view {vid!r}: keep must be an integer 1..10")
        views.append(View(vid, str(v.get("title", vid)), plane, tuple(labels), keep))
    name = data.get("name") or Path(where).stem
    return Protocol(str(name), str(data.get("title", name)), tuple(views), where)


def check_against_model(protocol: Protocol, labels: tuple[str, ...], coarse_map: dict[str, str],
                        model_id: str) -> None:
    """Refuse a protocol with a view the loaded model cannot name (one line, exit 2)."""
    planes = set(coarse_map.get(x, "other") for x in labels)
    for v in protocol.views:
        unknown = [x for x in v.labels if x not in labels]
        if unknown:
            raise UserError(f"exam {protocol.name}: view {v.id!r} needs label(s) {', '.join(map(repr, unknown))} "
                            f"that model {model_id} cannot name (its labels: {', '.join(labels)})")
        wrong = [x for x in v.labels if coarse_map.get(x, "other") != v.plane]
        if wrong:
            raise UserError(f"exam {protocol.name}: view {v.id!r}: label(s) {', '.join(map(repr, wrong))} "
                            f"are not {v.plane} in model {model_id}")
        if v.plane not in planes:
            raise UserError(f"exam {protocol.name}: view {v.id!r} needs plane {v.plane!r} that model "
                            f"{model_id} cannot name")

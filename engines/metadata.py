"""The model contract: what an exported ONNX file carries so the runtime needs nothing else.

Every sonoplane ONNX file stores one JSON document under the metadata key `sonoplane`
(`onnx.ModelProto.metadata_props`). The runtime reads it through onnxruntime's
`get_modelmeta().custom_metadata_map`, so reading it needs neither torch nor the `onnx` package.

Fields (version 1):
    format_version   1
    model_id         short name, e.g. "sononet16", "efficientnet_lite0-planes"
    task             "plane" (classify the anatomical plane) or "anomaly" (normal/abnormal)
    labels           the model's own output classes, in output order
    coarse_map       label -> coarse plane (engines.planes.COARSE_PLANES); task "plane" only
    input            {"name", "height", "width", "channels" (1 gray / 3 BGR->RGB)}
    normalisation    {"kind": "per_image_standardise", "scale": 255.0}
                     or {"kind": "mean_std", "mean": [...], "std": [...]}  (x in 0..1 first)
    resize           cv2 interpolation name, "area" or "linear"
    crop_preset      name in engines.crop.PRESETS or null (then the runtime auto-detects)
    outputs          {"logits": name, "cam": name or null, optional "embedding", "open_set"}; logits are
                     pre-softmax; open_set is the (N,) distance of engines/open_set.py
    open_set         optional: {"kind": "mahalanobis_tied", "threshold", "release", ...provenance}; a
                     far-or-unsure fit adds "near" and "confident" (streamer.smoothing.OpenSetGate)
    temperature      confidence calibration, probs = softmax(logits / T); 1.0 if uncalibrated
    uncertain_band   anomaly only: [lo, hi] on p(abnormal) inside which the answer is "uncertain"
    training, metrics, license, source   free-form provenance, shown by `sonoplane models`

A sidecar `MODEL.onnx.calibration.json` ({"temperature": T, ...}), written by
`calibration.temperature`, overrides `temperature` without rewriting the model.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METADATA_KEY = "sonoplane"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file is missing, unreadable or lacks sonoplane metadata."""


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    model_id: str
    task: str
    labels: tuple[str, ...]
    coarse_map: dict[str, str]
    input_name: str
    height: int
    width: int
    channels: int
    normalisation: dict[str, Any]
    resize: str = "area"
    crop_preset: str | None = None
    logits_output: str = "logits"
    cam_output: str | None = None
    temperature: float = 1.0
    uncertain_band: tuple[float, float] | None = None
    sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def open_set_output(self) -> str | None:
        """Name of the open-set distance output, when the model was fitted (engines/open_set.py)."""
        return (self.extra.get("outputs") or {}).get("open_set") if self.open_set else None

    @property
    def open_set(self) -> dict | None:
        cfg = self.extra.get("open_set")
        return cfg if isinstance(cfg, dict) and "threshold" in cfg else None

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    def coarse(self, label: str) -> str:
        return self.coarse_map.get(label, "other")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def info_from_dict(meta: dict[str, Any], path: Path, sha256: str = "") -> ModelInfo:
    try:
        inp = meta["input"]
        outputs = meta.get("outputs", {})
        band = meta.get("uncertain_band")
        known = {"format_version", "model_id", "task", "labels", "coarse_map", "input",
                 "normalisation", "resize", "crop_preset", "outputs", "temperature",
                 "uncertain_band"}
        return ModelInfo(
            path=path,
            model_id=str(meta["model_id"]),
            task=str(meta.get("task", "plane")),
            labels=tuple(meta["labels"]),
            coarse_map=dict(meta.get("coarse_map", {})),
            input_name=str(inp.get("name", "image")),
            height=int(inp["height"]),
            width=int(inp["width"]),
            channels=int(inp.get("channels", 1)),
            normalisation=dict(meta["normalisation"]),
            resize=str(meta.get("resize", "area")),
            crop_preset=meta.get("crop_preset"),
            logits_output=str(outputs.get("logits", "logits")),
            cam_output=outputs.get("cam"),
            temperature=float(meta.get("temperature", 1.0)),
            uncertain_band=tuple(band) if band else None,
            sha256=sha256,
            extra={k: v for k, v in meta.items() if k not in known or k == "outputs"},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: sonoplane metadata is incomplete ({exc!r})") from exc


def read_model_info(path: str | Path, session: Any = None) -> ModelInfo:
    """Read the metadata of an ONNX model file (through onnxruntime; no torch, no onnx)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    if session is None:
        import onnxruntime as ort
        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several private exception types
            raise ModelFileError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0]})") from exc
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise ModelFileError(f"{path}: ONNX file has no '{METADATA_KEY}' metadata (not a sonoplane model)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: sonoplane metadata is not JSON ({exc})") from exc
    sidecar = path.with_name(path.name + ".calibration.json")
    if sidecar.is_file():
        meta["temperature"] = float(json.loads(sidecar.read_text())["temperature"])
    return info_from_dict(meta, path, file_sha256(path))


def metadata_json(meta: dict[str, Any]) -> str:
    """Serialise metadata for embedding at export time (engines.export uses this)."""
    meta = {"format_version": FORMAT_VERSION, **meta}
    info_from_dict(meta, Path("<export>"))  # validate before writing
    return json.dumps(meta, sort_keys=True)

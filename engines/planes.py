"""Coarse plane vocabulary shared by every model, the runtime and the tools.

Every model maps its own fine labels (`Brain (Tv.)`, `4CH`, ...) onto these coarse planes through
the `coarse_map` in its metadata. Two pseudo-planes exist only after smoothing: `uncertain`
(nothing is confident) and `none` (no ultrasound image: probe lifted / blank screen).
"""
from __future__ import annotations

import numpy as np

COARSE_PLANES: tuple[str, ...] = (
    "brain", "abdomen", "femur", "thorax", "spine", "profile", "cervix", "other",
)
UNCERTAIN = "uncertain"
NO_IMAGE = "none"

# FETAL_PLANES_DB `Plane` column -> coarse plane.
FETAL_PLANES_DB_TO_COARSE: dict[str, str] = {
    "Fetal brain": "brain",
    "Fetal abdomen": "abdomen",
    "Fetal femur": "femur",
    "Fetal thorax": "thorax",
    "Maternal cervix": "cervix",
    "Other": "other",
}
COARSE_TO_FETAL_PLANES_DB = {v: k for k, v in FETAL_PLANES_DB_TO_COARSE.items()}


def plane_matrix(labels, coarse_map: dict[str, str]):
    """fine -> coarse as a (labels x COARSE_PLANES) 0/1 float32 matrix: plane probs = fine probs @ M.
    Labels the map does not name count as "other". The runtime's smoother and the offline open-set fit
    both use it, so they sum the same classes."""
    m = np.zeros((len(labels), len(COARSE_PLANES)), np.float32)
    for i, label in enumerate(labels):
        m[i, COARSE_PLANES.index(coarse_map.get(label, "other"))] = 1.0
    return m

# SonoNet16's 14 classes (order of its output) -> coarse plane.
SONONET16_LABELS: tuple[str, ...] = (
    "3VV", "4CH", "Abdominal", "Background", "Brain (Cb.)", "Brain (Tv.)", "Femur", "Kidneys",
    "Lips", "LVOT", "Profile", "RVOT", "Spine (cor.)", "Spine (sag.)",
)
SONONET16_TO_COARSE: dict[str, str] = {
    "3VV": "thorax", "4CH": "thorax", "LVOT": "thorax", "RVOT": "thorax",
    "Abdominal": "abdomen", "Kidneys": "abdomen",
    "Brain (Cb.)": "brain", "Brain (Tv.)": "brain",
    "Femur": "femur",
    "Lips": "profile", "Profile": "profile",
    "Spine (cor.)": "spine", "Spine (sag.)": "spine",
    "Background": "other",
}

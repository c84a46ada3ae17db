"""SonoNet16 as a teacher for the plane student (issue 9: say "other" between standard planes).

Our training data has 25 Other + 7 cervix images; SonoNet16's `Background` class was learnt from many
freehand-video frames between standard planes. So, beside the usual hard-labelled batch, the student
sees a few extra *views* of fetal training images per step (zoomed in, off-centre, rotated: what the
probe shows while it moves between planes; engines.augment.TEACHER_VIEW), and SonoNet16 labels them.

Mapping SonoNet16's 14 classes to our label space (TEACHER_PLANE):
- 4CH -> thorax (FETAL_PLANES_DB `Thorax` is the four-chamber view); Abdominal -> abdomen;
  Brain (Cb.) / Brain (Tv.) -> brain; Femur -> femur.
- Background, and every view outside our protocol's four planes -> other: 3VV / LVOT / RVOT (heart
  views that are not the four-chamber plane), Kidneys, Lips, Profile, Spine (cor.) / (sag.).
A view is cut from one source image of known plane, so the target keeps one question from the teacher:
"is this still a standard view of the source's plane?" (teacher_targets):
    target[source's fine class] = teacher probability of the source's plane
    target[Other]               = everything else (Background, non-protocol views, and any other plane:
                                  a part of a femur image is not a thorax plane, whatever a teacher from
                                  another scanner says; zero-shot it calls 15 of 40 femurs something else)
Brain sub-planes are not asked of the teacher (its two brain classes do not match our three); the
source's sub-plane keeps the brain mass.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .planes import SONONET16_LABELS

# SonoNet16 class -> our plane for distillation (not engines.planes.SONONET16_TO_COARSE, which maps
# every heart view to thorax for running SonoNet16 itself).
TEACHER_PLANE: dict[str, str] = {
    "4CH": "thorax", "Abdominal": "abdomen", "Brain (Cb.)": "brain", "Brain (Tv.)": "brain", "Femur": "femur",
    "3VV": "other", "LVOT": "other", "RVOT": "other", "Kidneys": "other", "Lips": "other", "Profile": "other",
    "Spine (cor.)": "other", "Spine (sag.)": "other", "Background": "other",
}
TEACHERS = ("sononet16",)
TEACHER_INPUT = (288, 224)      # SonoNet16's w, h
TEACHER_SCALE = 255.0           # its normalisation: 255 * (x - mean) / std per image (engines/zoo/sononet16.md)


def teacher_targets(teacher_probs: np.ndarray, source: np.ndarray, label_names, coarse_of: dict) -> np.ndarray:
    """(N, C) soft targets in the student's label space from (N, 14) SonoNet16 probabilities.

    source: (N,) the student class index of the image each view was cut from (a fetal plane).
    """
    teacher_probs = np.asarray(teacher_probs, np.float64)
    if teacher_probs.ndim != 2 or teacher_probs.shape[1] != len(SONONET16_LABELS):
        raise ValueError(f"teacher probabilities must be (N, {len(SONONET16_LABELS)}), got {teacher_probs.shape}")
    names = list(label_names)
    if "Other" in names:
        other = names.index("Other")
    elif "other" in names:
        other = names.index("other")
    else:
        raise ValueError("the student needs an Other class to learn 'not a standard plane'")
    teacher_plane = np.array([TEACHER_PLANE[n] for n in SONONET16_LABELS])
    out = np.zeros((len(source), len(names)), np.float64)
    for i, s in enumerate(np.asarray(source)):
        plane = coarse_of.get(names[s], names[s])
        same = float(teacher_probs[i, teacher_plane == plane].sum())
        out[i, s] = same
        out[i, other] += 1.0 - same
    return out.astype(np.float32)


class Teacher:
    """SonoNet16 (torch port, the authors' weights) on uint8 views at its input size -> (N, 14) probabilities."""

    def __init__(self, name: str = "sononet16", npz_path: str | Path | None = None, temperature: float = 1.0,
                 model=None):
        """model: an already built SonoNet16 module instead of the authors' weights (tests)."""
        import torch

        from .errors import UserError
        from .models.sononet import DEFAULT_NPZ, sononet16
        if name not in TEACHERS:
            raise UserError(f"unknown teacher {name!r}; choose from {', '.join(TEACHERS)}")
        if model is None:
            path = Path(npz_path or DEFAULT_NPZ)
            if not path.is_file():
                raise UserError(f"teacher weights not found: {path} (SonoNet16.npz under ../shared/data/sononet)")
            model = sononet16(pretrained=True, npz_path=path)
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.temperature = temperature
        self.size = TEACHER_INPUT

    def probabilities(self, views: np.ndarray) -> np.ndarray:
        import torch

        from .data import per_image_standardise
        if views.shape[1:] != (self.size[1], self.size[0]):
            raise ValueError(f"teacher views must be {self.size[1]}x{self.size[0]}, got {views.shape[1:]}")
        x = torch.from_numpy(per_image_standardise(views, TEACHER_SCALE)).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            logits, _ = self.model(x)
        return torch.softmax(logits.float() / self.temperature, dim=1).numpy()


def soft_cross_entropy(logits, targets, groups=None):
    """Mean over the batch of -sum_c target_c log softmax(logits)_c (torch tensors).

    groups: optional (C, G) 0/1 tensor putting each class in one group (a coarse plane): the loss is then taken
    on group probabilities (targets and student both summed per group), leaving the split inside a group (the
    brain sub-planes) to the hard labels."""
    import torch
    logp = torch.log_softmax(logits, dim=1)
    if groups is None:
        return -(targets * logp).sum(1).mean()
    group_logp = torch.logsumexp(logp[:, :, None] + torch.log(groups)[None], dim=1)   # log sum_c in g p_c
    return -((targets @ groups) * group_logp).sum(1).mean()


def plane_groups(label_names, coarse_of: dict) -> np.ndarray:
    """(C, G) 0/1: class c belongs to coarse plane g (the planes in first-seen order)."""
    planes = list(dict.fromkeys(coarse_of.get(n, n) for n in label_names))
    return np.array([[coarse_of.get(n, n) == q for q in planes] for n in label_names], np.float32)


class Distillation:
    """The extra teacher-labelled views of one training step (engines.train.fit, --teacher).

    x_big: uint8 (N, H, W) training crops cached a little larger than the teacher input (the views are cut
    at the teacher's resolution, then INTER_AREA-resized to the student's, as the runtime resizes a crop);
    fetal: (N,) bool, images whose views the teacher labels (the four planes; Other/cervix keep hard labels).
    """

    def __init__(self, teacher: Teacher, x_big: np.ndarray, fetal: np.ndarray, label_names, coarse_of: dict,
                 views: int = 8, weight: float = 1.0, level: str = "fine"):
        """level: "fine", the soft loss on our classes (the source's brain sub-plane gets the brain mass);
        "plane", on coarse planes (the sub-plane split of a view is left free: a zoomed part of a brain
        image rarely shows what tells trans-thalamic from trans-ventricular)."""
        if level not in ("fine", "plane"):
            raise ValueError(f"level must be fine or plane, got {level!r}")
        self.level = level
        self.groups = plane_groups(label_names, coarse_of) if level == "plane" else None
        self.teacher, self.x_big, self.fetal = teacher, x_big, np.asarray(fetal, bool)
        self.label_names, self.coarse_of = list(label_names), coarse_of
        self.views, self.weight = views, weight

    def extra_batch(self, idx: np.ndarray, y: np.ndarray, size: tuple[int, int], rng: np.random.Generator):
        """(student inputs float32 (K, 1, h, w), soft targets (K, C)) from views of the batch's fetal images,
        or None when the batch holds none."""
        from .augment import TEACHER_VIEW, augment_batch
        from .data import per_image_standardise
        from .kd import resize_batch
        fetal_idx = idx[self.fetal[idx]]
        if self.views <= 0 or len(fetal_idx) == 0:
            return None
        pick = rng.choice(fetal_idx, size=self.views, replace=len(fetal_idx) < self.views)
        teacher_views = augment_batch(self.x_big[pick], self.teacher.size, rng, TEACHER_VIEW)
        student_views = resize_batch(teacher_views, size)
        targets = teacher_targets(self.teacher.probabilities(teacher_views), y[pick], self.label_names,
                                  self.coarse_of)
        return per_image_standardise(student_views), targets

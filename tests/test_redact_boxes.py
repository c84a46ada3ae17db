"""Redaction's glyph and word boxes from the pixel lists (session 7, CPU of the frames worker): the
same boxes as before, when OpenCV's connected-component statistics gave them, on real frames."""
import sys

import cv2
import numpy as np

from engines.redact import (GLYPH_MAX_H, GLYPH_MIN_H, MIN_GLYPHS, WORD_GAP, WORD_MIN_CONTRAST, TextBox,
                            _components, find_text_boxes_small, stroke_mask, work_factor)
from streamer.sources import open_source

from .conftest import ROOT, SAMPLE_CLIP

sys.path.insert(0, str(ROOT / "tools"))
from bench_redact import box_mask  # noqa: E402


def reference_boxes(gray_small: np.ndarray) -> list[TextBox]:
    """engines.redact.find_text_boxes_small as it was before session 7: OpenCV's statistics of
    both labellings (strokes and words) instead of boxes from the pixel lists."""
    strokes, tophat = stroke_mask(gray_small)
    # The stroke pixels as (x, y), in raster order; None when there are none (most frames of a
    # clean image: nothing else is computed then).
    points = cv2.findNonZero(strokes)
    if points is None:
        return []
    points = points.reshape(-1, 2)
    xs, ys = points[:, 0], points[:, 1]
    # 1. Glyphs: stroke components of text size whose strokes are crisp (mean top-hat high).
    n, labels, stats, _ = _components(strokes)
    lab = labels[ys, xs]
    ink = np.bincount(lab, minlength=n)
    contrast = np.bincount(lab, weights=tophat[ys, xs], minlength=n) / np.maximum(ink, 1)
    gw, gh = stats[:, 2], stats[:, 3]
    # Text cut by the image's top edge (a header line the crop starts inside) leaves glyph
    # fragments only a row or two high: at the edge any height counts.
    at_top = stats[:, 1] <= 1
    glyph = (((gh >= 2) | at_top) & (gh <= GLYPH_MAX_H) & (gw <= 3 * GLYPH_MAX_H) & (ink >= 2)
             & (contrast >= WORD_MIN_CONTRAST))
    glyph[0] = False
    if not glyph.any():
        return []
    glyph_ids = np.flatnonzero(glyph)
    # Steps 2 on run inside the glyphs' bounding box, widened by more than the word dilation's
    # reach: the same words as on the whole image, on far fewer pixels (text is a small share).
    gx0, gy0 = stats[glyph_ids, 0], stats[glyph_ids, 1]
    bx0, by0 = max(0, int(gx0.min()) - WORD_GAP), int(gy0.min())
    bx1 = min(labels.shape[1], int((gx0 + gw[glyph_ids]).max()) + WORD_GAP)
    by1 = int((gy0 + gh[glyph_ids]).max())
    # The glyphs' pixels, drawn from the stroke pixel list (no pass over the label image).
    is_glyph = glyph[lab]
    gxs, gys, glab = xs[is_glyph] - bx0, ys[is_glyph] - by0, lab[is_glyph]
    glyphs = np.zeros((by1 - by0, bx1 - bx0), np.uint8)
    glyphs[gys, gxs] = 1
    # 2. Words: glyphs a letter gap apart joined; a word has several glyphs and is wider than tall.
    words = cv2.dilate(glyphs, cv2.getStructuringElement(cv2.MORPH_RECT, (WORD_GAP, 1)))
    m, wlabels, wstats, _ = _components(words)
    first = np.zeros(n, np.int64)   # glyph -> the word it belongs to (all its pixels agree)
    first[glab] = wlabels[gys, gxs]
    members = np.bincount(first[glyph_ids], minlength=m)
    tallest = np.zeros(m, np.int64)
    np.maximum.at(tallest, first[glyph_ids], gh[glyph_ids])
    x, y, w, h = wstats[:, 0] + bx0, wstats[:, 1] + by0, wstats[:, 2], wstats[:, 3]
    # Letters of a line stand side by side: the word is barely taller than its tallest glyph
    # (the dilation adds 2). Speckle candidates join up in every direction.
    keep = (((h >= GLYPH_MIN_H) | (y <= 1)) & (h <= GLYPH_MAX_H) & (w >= h) & (members >= MIN_GLYPHS)
            & (h <= tallest * 1.5 + 2))
    keep[0] = False
    return sorted(TextBox(int(x[i]), int(y[i]), int(x[i] + w[i]), int(y[i] + h[i])) for i in np.flatnonzero(keep))


def _working_copies(every: int = 9, n: int = 40) -> list[np.ndarray]:
    """engines.redact's working copy (brightest channel, shrunk) of frames of the bundled clip, at
    720p and scaled to 1080p, with a patient line drawn in at a few sizes and places."""
    out = []
    src = open_source(str(SAMPLE_CLIP))
    try:
        for k, frame in enumerate(src.frames()):
            if k % every:
                continue
            for width in (1280, 1920):
                bgr = frame.image if width == 1280 else cv2.resize(frame.image, (1920, 1080))
                f = work_factor(width)
                h, w = bgr.shape[:2]
                small = cv2.resize(bgr[:h // f * f, :w // f * f], (w // f, h // f), interpolation=cv2.INTER_AREA)
                gray = cv2.max(cv2.max(small[:, :, 0], small[:, :, 1]), small[:, :, 2])
                out.append(gray)
                text = gray.copy()
                cv2.putText(text, "PATIENT JANE DOE 1985-02-03", (10 + 7 * (k % 9), 40 + 3 * (k % 90)),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.35 + 0.15 * (k % 5), 255, 1 + k % 2)
                out.append(text)
            if len(out) >= 4 * n:
                break
    finally:
        src.close()
    return out


def test_boxes_from_pixel_lists_are_the_boxes_of_opencvs_statistics():
    """The sure words (cover=False, what the crop's header rule measures) are exactly the
    reference's; the boxes to blank (session 8: lines carried on) cover every pixel of them."""
    images = _working_copies()
    assert len(images) == 160
    found = grew = 0
    for gray in images:
        want = reference_boxes(gray)
        assert find_text_boxes_small(gray, cover=False) == want
        sure, blanked = box_mask(want, gray.shape), box_mask(find_text_boxes_small(gray), gray.shape)
        assert not (sure & ~blanked).any()
        grew += int((blanked & ~sure).any())
        found += len(want)
    assert found > 100          # the drawn lines (and the clip's own text) were found: boxes were compared
    assert grew > 0             # and the cover added to some of them


def test_an_image_without_strokes_has_no_boxes():
    assert find_text_boxes_small(np.zeros((120, 160), np.uint8)) == []

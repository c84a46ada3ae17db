"""Redaction: blank burned-in text and UI glyphs in an image before it leaves the process.

Scanners burn the patient's name, ID, dates and settings into their video output. The auto crop
keeps the header band out (`engines.crop`), but text also sits inside the imaging area (settings
beside the sector, annotations, a name drawn over the image on some UIs). Anything published
goes through this detector first: exam captures through `redact_text`, the frames topic (overlays,
MP4) through streamer.topic_image, which feeds `find_text_boxes_small` a working copy made from the
YUV planes and blanks the boxes at display size; the classifier keeps seeing the unredacted crop.

How (no text model: none ships with the packages here): on a downscaled copy of the brightest
channel, a white top-hat keeps thin bright strokes (narrower than the kernel: glyph strokes, not
tissue, whose bright structures are wider or speckle-dim), a threshold keeps the high-contrast
ones, a horizontal dilation joins strokes into words, and connected components are kept when they
are glyph-sized and word-shaped (height within text range, at least as wide as tall, sparse ink).
The kept boxes, padded, are blanked (set to black) in the full-size image. It errs on the side of
blanking: a small false box on tissue costs a few published pixels, a missed name is a leak. So
what is blanked (cover=True) also takes in the text line around each word, where letters over
bright tissue fail the glyph tests (find_text_boxes_small; docs/redaction.md, session 8).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

WORK_WIDTH = 640           # detection runs on a copy at most this wide (integer shrink factor)
TOPHAT_KERNEL = 9          # strokes narrower than this (work pixels) count as glyph strokes
STROKE_CONTRAST = 90       # top-hat response of a glyph stroke over its surroundings (0..255)
STROKE_MIN_BRIGHTNESS = 100
WORD_MIN_CONTRAST = 110    # mean top-hat over a word's strokes: rendered text is crisp, speckle is not
GLYPH_MIN_H, GLYPH_MAX_H = 3, 48   # a text line's height in work pixels (≈6..96 px at 1280 wide)
PAD = 2                    # work pixels added around each blanked box (antialiasing halo)
WORD_GAP = 9                # letters closer than this (work pixels) belong to one word (odd: the
                            # dilation is centred, find_text_boxes_small widens word boxes by WORD_GAP // 2)
MIN_GLYPHS = 3          # a word: at least this many glyphs (a lone speckle is not text)
CARRY_CONTRAST = 60     # a confirmed word's line is carried over strokes this crisp (top-hat, below
                        # STROKE_CONTRAST: the low threshold of hysteresis, only beside a word)
CARRY_LETTERS = 8       # ... at most this many letter heights (the word's) each side: the pieces a line
                        # loses are a few letters; a false word on bright speckle must not run on


@dataclass(frozen=True, order=True)
class TextBox:
    x0: int
    y0: int
    x1: int
    y1: int


def stroke_mask(gray_small: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thin, bright, high-contrast strokes (uint8 0/1) of a small gray image, and the top-hat."""
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (TOPHAT_KERNEL, TOPHAT_KERNEL))
    tophat = cv2.morphologyEx(gray_small, cv2.MORPH_TOPHAT, kernel)
    return ((tophat > STROKE_CONTRAST) & (gray_small > STROKE_MIN_BRIGHTNESS)).astype(np.uint8), tophat


def _components(mask: np.ndarray):
    """8-connected components with stats. Grana's block-based labelling: the same components as
    OpenCV's default (Spaghetti) in about a third of the time on sparse stroke masks here
    (tools/bench_redact.py); label numbers may differ, so callers sort what they return."""
    return cv2.connectedComponentsWithStatsWithAlgorithm(mask, 8, cv2.CV_32S, cv2.CCL_GRANA)


def _labels(mask: np.ndarray) -> tuple[int, np.ndarray]:
    """(count, label image) of the 8-connected components: the labelling of _components without
    OpenCV's statistics pass over every pixel (~0.8 of its ~1 ms on a 476x321 stroke mask here)."""
    return cv2.connectedComponentsWithAlgorithm(mask, 8, cv2.CV_32S, cv2.CCL_GRANA)


def _boxes_of(n: int, lab: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """(n, 4) left, top, width, height of each component, from its pixels (xs, ys with labels lab):
    OpenCV's CC_STAT_LEFT..CC_STAT_HEIGHT for every label that has a pixel here (0 for others)."""
    big = np.iinfo(np.int32).max
    x0, y0 = np.full(n, big, np.int32), np.full(n, big, np.int32)
    x1, y1 = np.full(n, -1, np.int32), np.full(n, -1, np.int32)
    np.minimum.at(x0, lab, xs)
    np.minimum.at(y0, lab, ys)
    np.maximum.at(x1, lab, xs)
    np.maximum.at(y1, lab, ys)
    seen = x1 >= 0
    stats = np.zeros((n, 4), np.int32)
    stats[seen] = np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], axis=1)[seen]
    return stats


def find_text_boxes_small(gray_small: np.ndarray, cover: bool = True) -> list[TextBox]:
    """Word-shaped groups of glyph-like strokes, in the coordinates of `gray_small` (sorted).

    cover: the boxes to blank, which err towards covering the whole text line (below); False:
    the words alone, where they are sure (the crop's header rule measures the tissue beside
    them)."""
    strokes, tophat = stroke_mask(gray_small)
    # The stroke pixels as (x, y), in raster order; None when there are none (most frames of a
    # clean image: nothing else is computed then).
    points = cv2.findNonZero(strokes)
    if points is None:
        return []
    points = points.reshape(-1, 2)
    xs, ys = points[:, 0], points[:, 1]
    # 1. Glyphs: stroke components of text size. Their boxes come from the stroke pixel list (few:
    # text and speckle), not from a pass over the mask.
    n, labels = _labels(strokes)
    lab = labels[ys, xs]
    stats = _boxes_of(n, lab, xs, ys)
    ink = np.bincount(lab, minlength=n)
    contrast = np.bincount(lab, weights=tophat[ys, xs], minlength=n) / np.maximum(ink, 1)
    gw, gh = stats[:, 2], stats[:, 3]
    # Text cut by the image's top edge (a header line the crop starts inside) leaves glyph
    # fragments only a row or two high: at the edge any height counts.
    at_top = stats[:, 1] <= 1
    glyph_sized = ((gh >= 2) | at_top) & (gh <= GLYPH_MAX_H) & (gw <= 3 * GLYPH_MAX_H) & (ink >= 2)
    glyph_sized[0] = False
    # Crisp glyphs (mean top-hat high: rendered text, not speckle) make words: a word needs
    # MIN_GLYPHS crisp letters. What real text over tissue does to that, and the additions for it
    # (each only ever adds boxes to the words of the rule above, so nothing found before is lost):
    # - a speckle blob touching the line joins its word and makes it too tall for a word: the
    #   word is also judged on its line alone (the glyphs whose height and centre agree with the
    #   word's median glyph), see _words;
    # - over bright tissue a letter's top-hat drops (the opening takes in the tissue behind it)
    #   or its strokes merge with a bright tissue edge: thin letters (I, T, 0) fall below the
    #   bar or stop being glyph-sized, the line breaks there, and the pieces of fewer than
    #   MIN_GLYPHS letters were dropped. A kept word's text line is carried on, in the word's own
    #   rows, over the strokes that continue it (_carry_lines): like edge linking's low threshold
    #   next to its high one, strokes count there whatever component they belong to.
    crisp = glyph_sized & (contrast >= WORD_MIN_CONTRAST)
    if int(crisp.sum()) < MIN_GLYPHS:
        return []
    kept, line_judged = _words(crisp, stats, ink, lab, xs, ys, labels.shape[1])
    if cover:
        kept = np.concatenate([kept, line_judged])
        if len(kept):
            kept = np.concatenate([kept, _carry_lines(tophat > CARRY_CONTRAST, kept)])
    return sorted({TextBox(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h in kept})


def _carry_lines(strokes: np.ndarray, words: np.ndarray) -> np.ndarray:
    """Each word's box (x, y, w, h rows) carried left and right along its own rows over the
    columns that hold a letter's worth of stroke (at least a quarter of the rows, 2 pixels), as
    long as the next such column is at most a letter height (the rows) away, and no further than
    CARRY_LETTERS letter heights. Only the boxes that grew are returned."""
    out = []
    height, width = strokes.shape
    for x, y, w, h in words.tolist():
        need = max(2, h // 4)
        # A column continues the line when its strokes are in the line's rows: at least `need`
        # there, and twice as many as in the same number of rows above or below it, on one side
        # at least (text has room beside its line, a tissue edge may cross one side; bright
        # speckle has strokes everywhere).
        lo, hi = max(0, x - CARRY_LETTERS * h), min(width, x + w + CARRY_LETTERS * h)
        band = np.count_nonzero(strokes[y:y + h, lo:hi], axis=0)
        above = np.count_nonzero(strokes[max(0, y - h):y, lo:hi], axis=0)
        below = np.count_nonzero(strokes[y + h:min(height, y + 2 * h), lo:hi], axis=0)
        inked = (band >= need) & (band >= 2 * np.minimum(above, below))
        x0, x1 = x - lo, x + w - lo             # in the window's columns
        while x1 < hi - lo:        # right: jump to the last inked column within h of the end
            ahead = np.flatnonzero(inked[x1:x1 + h])
            if not len(ahead):
                break
            x1 += int(ahead[-1]) + 1
        while x0 > 0:              # left, the same
            start = max(0, x0 - h)
            behind = np.flatnonzero(inked[start:x0])
            if not len(behind):
                break
            x0 = start + int(behind[0])
        x0, x1 = x0 + lo, x1 + lo
        if x0 < x or x1 > x + w:
            out.append((x0, y, x1 - x0, h))
    return np.array(out, dtype=words.dtype).reshape(-1, 4)


def _per_word_median(values: np.ndarray, word: np.ndarray, m: int) -> np.ndarray:
    """The (upper) median of `values` within each of m words (0 where a word has none)."""
    order = np.lexsort((values, word))
    count = np.bincount(word, minlength=m)
    start = np.cumsum(count) - count
    out = np.zeros(m, values.dtype)
    has = count > 0
    out[has] = values[order][start[has] + count[has] // 2]
    return out


def _words(glyph: np.ndarray, stats: np.ndarray, ink: np.ndarray, lab: np.ndarray,
           xs: np.ndarray, ys: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The words kept as text among the glyph components `glyph` (bool per stroke label), as
    x, y, w, h rows in the image's coordinates: those kept whole, and those kept on their line.
    A word is judged twice, whole (the rule since session 3: word-shaped, MIN_GLYPHS glyphs) and
    on its text line alone, and kept if either passes."""
    n = len(glyph)
    gw, gh = stats[:, 2], stats[:, 3]
    glyph_ids = np.flatnonzero(glyph)
    # Steps 2 on run inside the glyphs' bounding box, widened by more than the word dilation's
    # reach: the same words as on the whole image, on far fewer pixels (text is a small share).
    gx0, gy0 = stats[glyph_ids, 0], stats[glyph_ids, 1]
    bx0, by0 = max(0, int(gx0.min()) - WORD_GAP), int(gy0.min())
    bx1 = min(width, int((gx0 + gw[glyph_ids]).max()) + WORD_GAP)
    by1 = int((gy0 + gh[glyph_ids]).max())
    # The glyphs' pixels, drawn from the stroke pixel list (no pass over the label image).
    is_glyph = glyph[lab]
    gxs, gys, glab = xs[is_glyph] - bx0, ys[is_glyph] - by0, lab[is_glyph]
    glyphs = np.zeros((by1 - by0, bx1 - bx0), np.uint8)
    glyphs[gys, gxs] = 1
    # 2. Words: glyphs a letter gap apart joined; a word has several glyphs and is wider than tall.
    words = cv2.dilate(glyphs, cv2.getStructuringElement(cv2.MORPH_RECT, (WORD_GAP, 1)))
    m, wlabels = _labels(words)
    # A word's pixels are its glyphs' pixels spread WORD_GAP // 2 to each side (the dilation is
    # horizontal, centred): its box is theirs, widened so and clipped to the image.
    glyph_words = wlabels[gys, gxs]
    wstats = _boxes_of(m, glyph_words, gxs, gys)
    reach = WORD_GAP // 2
    wx0 = np.maximum(wstats[:, 0] - reach, 0)
    wx1 = np.minimum(wstats[:, 0] + wstats[:, 2] - 1 + reach, words.shape[1] - 1)
    wstats[:, 0], wstats[:, 2] = wx0, wx1 - wx0 + 1
    first = np.zeros(n, np.int64)   # glyph -> the word it belongs to (all its pixels agree)
    first[glab] = glyph_words
    word_of = first[glyph_ids]
    members = np.bincount(word_of, minlength=m)
    tallest = np.zeros(m, np.int64)
    np.maximum.at(tallest, word_of, gh[glyph_ids])
    x, y, w, h = wstats[:, 0] + bx0, wstats[:, 1] + by0, wstats[:, 2], wstats[:, 3]
    # Letters of a line stand side by side: the word is barely taller than its tallest glyph
    # (the dilation adds 2). Speckle candidates join up in every direction.
    whole = (((h >= GLYPH_MIN_H) | (y <= 1)) & (h <= GLYPH_MAX_H) & (w >= h) & (members >= MIN_GLYPHS)
             & (h <= tallest * 1.5 + 2))
    whole[0] = False
    boxes = np.stack([x, y, w, h], axis=1)
    # Words with enough glyphs that fail as a whole are judged on their text line alone.
    judged = ~whole & (members >= MIN_GLYPHS)
    judged[0] = False
    if not judged.any():          # most frames: every word passed whole, or none has the glyphs
        return boxes[whole], boxes[:0]
    sel = judged[word_of]
    return boxes[whole], _line_boxes(word_of[sel], gx0[sel], gy0[sel], gw[glyph_ids][sel], gh[glyph_ids][sel],
                                     ink[glyph_ids][sel], m, reach, width)


def _line_boxes(word_of: np.ndarray, gx0: np.ndarray, gy0: np.ndarray, gw: np.ndarray, gh: np.ndarray,
                ink: np.ndarray, m: int, reach: int, width: int) -> np.ndarray:
    """x, y, w, h of the words (of m; glyphs given by word, left, top, width, height, ink) that
    pass on their text line: the glyphs whose height and centre row agree with the word's median
    glyph. A blob hanging off the line (speckle touching a letter's rows) is left out of the line;
    the line must still hold MIN_GLYPHS glyphs and most of the word's ink (speckle clusters have
    no line), be word-shaped and text-high."""
    cy2 = 2 * gy0 + gh                                   # centre row, doubled (integers)
    med_h, med_cy2 = _per_word_median(gh, word_of, m), _per_word_median(cy2, word_of, m)
    on_line = (np.abs(cy2 - med_cy2[word_of]) <= med_h[word_of]) & (gh <= med_h[word_of] * 1.5 + 2)
    word, left, top = word_of[on_line], gx0[on_line], gy0[on_line]
    # The line's box: the union of its glyphs' boxes, as the box of their corners.
    corners = _boxes_of(m, np.concatenate([word, word]), np.concatenate([left, left + gw[on_line] - 1]),
                        np.concatenate([top, top + gh[on_line] - 1]))
    members = np.bincount(word, minlength=m)
    line_ink = np.bincount(word, weights=ink[on_line], minlength=m)
    word_ink = np.bincount(word_of, weights=ink, minlength=m)
    ly0, lh = corners[:, 1], corners[:, 3]
    lx0, lx1 = np.maximum(corners[:, 0] - reach, 0), np.minimum(corners[:, 0] + corners[:, 2] + reach, width)
    lw = lx1 - lx0
    keep = ((members >= MIN_GLYPHS) & ((lh >= GLYPH_MIN_H) | (ly0 <= 1)) & (lh <= GLYPH_MAX_H) & (lw >= lh)
            & (line_ink >= 0.5 * word_ink))
    return np.stack([lx0, ly0, lw, lh], axis=1)[keep]


def work_factor(width: int) -> int:
    """The integer shrink factor of the detection copy of an image `width` pixels wide."""
    return max(1, int(np.ceil(width / WORK_WIDTH)))


def boxes_in_image(small_boxes: list[TextBox], factor: int, width: int, height: int) -> list[TextBox]:
    """Boxes found on a copy shrunk by `factor`, padded and scaled to the full image (clipped)."""
    return [TextBox(max(0, (b.x0 - PAD) * factor), max(0, (b.y0 - PAD) * factor),
                    min(width, (b.x1 + PAD) * factor), min(height, (b.y1 + PAD) * factor)) for b in small_boxes]


def find_text_boxes(image: np.ndarray, cover: bool = True) -> list[TextBox]:
    """Text / UI glyph boxes of a BGR (or gray) image, in its own pixel coordinates (cover: see
    find_text_boxes_small)."""
    h, w = image.shape[:2]
    if h < 8 or w < 8:
        return []
    # An integer shrink factor: OpenCV's area resize has a fast path for it (~0.4 ms at 720p).
    f = work_factor(w)
    if f > 1:
        small = cv2.resize(image[:h // f * f, :w // f * f], (w // f, h // f), interpolation=cv2.INTER_AREA)
    else:
        small = np.ascontiguousarray(image)
    if small.ndim == 3:   # coloured text (cyan, yellow) is bright in some channel
        small = cv2.max(cv2.max(small[:, :, 0], small[:, :, 1]), small[:, :, 2])
    return boxes_in_image(find_text_boxes_small(small, cover), f, w, h)


def blank_scaled(image: np.ndarray, boxes: list[TextBox], scale_x: float, scale_y: float) -> None:
    """Blank (in place) boxes of a full-size image in a copy of it scaled by (scale_x, scale_y):
    rounded outwards, so every scaled pixel that any box pixel reaches is black."""
    h, w = image.shape[:2]
    for b in boxes:
        x0, y0 = max(0, int(np.floor(b.x0 * scale_x))), max(0, int(np.floor(b.y0 * scale_y)))
        x1, y1 = min(w, int(np.ceil(b.x1 * scale_x))), min(h, int(np.ceil(b.y1 * scale_y)))
        image[y0:y1, x0:x1] = 0


def blanked(image: np.ndarray, boxes: list[TextBox], in_place: bool = False) -> np.ndarray:
    """`image` with the boxes (in its own pixels) set to black: a copy, or `image` itself when there are no
    boxes or in_place (a caller that owns a fresh image saves the copy)."""
    if not boxes:
        return image
    out = image if in_place else image.copy()
    for b in boxes:
        out[b.y0:b.y1, b.x0:b.x1] = 0
    return out


def redact_text(image: np.ndarray, in_place: bool = False) -> tuple[np.ndarray, list[TextBox]]:
    """A copy of `image` with every detected text box blanked (black), and the boxes.
    in_place: blank `image` itself (a caller that owns a fresh image saves the copy)."""
    boxes = find_text_boxes(image)
    return blanked(image, boxes, in_place), boxes

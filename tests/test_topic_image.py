"""The frames topic's image made at display size (streamer/topic_image.py): detection on a small copy
of the YUV planes finds the same text as on the full-size colour crop, coloured text included, and
every display pixel a text box reaches is blanked."""
import cv2
import numpy as np

from engines.crop import CropRect
from engines.redact import TextBox, blank_scaled, find_text_boxes, work_factor
from streamer import yuv
from streamer.capture import LAYOUT_I420, CapturedFrame
from streamer.topic_image import detection_copy, display_and_boxes, redacted_display

from .test_redact import LINE, clip_frames, draw


def yuv_frame(bgr):
    h, w = bgr.shape[:2]
    return CapturedFrame(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), LAYOUT_I420, h, w, 0, None, 0.0, 0.0, 0)


def speckle(h=1080, w=1920, seed=0):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 90, (h, w, 3), np.uint8), (0, 0), 1.2)


def full_size_shrunk_brightest(frame, rect, f):
    """What engines.redact.find_text_boxes works on: the full-size colour crop, area-shrunk, brightest channel."""
    crop = frame.colour(rect)
    h, w = crop.shape[:2]
    small = cv2.resize(crop[:h // f * f, :w // f * f], (w // f, h // f), interpolation=cv2.INTER_AREA)
    return small.max(axis=2)


def test_gray_detection_copy_is_the_full_size_copy_up_to_rounding():
    for img in clip_frames(n=4, step=80):
        gray_img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        frame = yuv_frame(gray_img)
        for rect in (CropRect(208, 68, 1156, 720), CropRect(201, 61, 1001, 701), CropRect(0, 0, 1280, 720)):
            f = work_factor(rect.width)
            gray, work = detection_copy(frame, rect, f)
            ref = full_size_shrunk_brightest(frame, rect, f)
            assert gray.shape == ref.shape == work.shape[:2]
            diff = np.abs(gray.astype(int) - ref)
            assert diff.mean() < 0.6 and diff.max() <= 3, (rect, diff.mean(), diff.max())


def test_coloured_blocks_are_exactly_the_full_size_copy():
    img = speckle(720, 1280)
    img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    mask = np.zeros(img.shape[:2], np.uint8)
    for target, c in ((img, (255, 80, 60)), (mask, 255)):
        cv2.putText(target, "SRI II 5 / CRI 1", (300, 400), cv2.FONT_HERSHEY_SIMPLEX, 0.7, c, 1, cv2.LINE_AA)
    frame = yuv_frame(img)
    rect = CropRect(100, 50, 1180, 700)
    f = work_factor(rect.width)
    gray, _ = detection_copy(frame, rect, f)
    ref = full_size_shrunk_brightest(frame, rect, f)
    # Every block the coloured text touches is converted at full size: identical there.
    text_blocks = cv2.resize(rect.apply(mask), (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_AREA) > 0
    assert text_blocks.sum() > 100 and np.array_equal(gray[text_blocks], ref[text_blocks])
    assert sorted(display_and_boxes(frame, rect, 640)[1]) == sorted(find_text_boxes(frame.colour(rect)))


def test_thin_coloured_text_on_gray_video_is_blanked_in_the_published_image():
    for colour in ((255, 80, 60), (0, 200, 255), (60, 255, 60)):
        img = speckle()
        img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        mask = np.zeros(img.shape[:2], np.uint8)
        for target, c in ((img, colour), (mask, 255)):
            cv2.putText(target, LINE, (400, 600), cv2.FONT_HERSHEY_SIMPLEX, 1.2, c, 2, cv2.LINE_AA)
        frame = yuv_frame(img)
        rect = CropRect(0, 0, 1920, 1080)
        boxes = display_and_boxes(frame, rect, 640)[1]
        covered = np.zeros(mask.shape, bool)
        for b in boxes:
            covered[b.y0:b.y1, b.x0:b.x1] = True
        assert (mask > 0)[~covered].sum() == 0, colour


def test_published_image_blanks_white_text_and_redact_off_shows_it():
    img = speckle()
    mask = draw(img, (500, 500), scale=1.5, thick=3)
    frame = yuv_frame(img)
    for rect in (CropRect(0, 0, 1920, 1080), CropRect(186, 114, 1614, 1080)):
        out = redacted_display(frame, rect, 640)
        shown = redacted_display(frame, rect, 640, redact=False)
        assert out.shape[1] == 640 and out.shape == shown.shape
        m = cv2.resize(rect.apply(mask).astype(np.uint8), (640, out.shape[0]), interpolation=cv2.INTER_AREA) > 0
        assert (out[m].max(axis=1) == 0).mean() > 0.99          # the line's display pixels are black
        assert (shown[m].max(axis=1) > 200).mean() > 0.2         # without redaction they show the line
        assert (out.max(axis=2) == 0).mean() < 0.2               # and the image is kept


def test_display_copy_is_the_full_conversion_downscaled_up_to_rounding():
    img = cv2.GaussianBlur(speckle(), (0, 0), 3)
    frame = yuv_frame(img)
    for rect in (CropRect(186, 114, 1614, 1080), CropRect(201, 121, 1503, 1001), CropRect(0, 0, 1920, 1080),
                 CropRect(300, 300, 900, 700)):
        out = yuv.to_bgr_display(frame.pixels, 1080, 1920, rect, 640)
        w = min(640, rect.width)
        assert out.shape == (round(rect.height * w / rect.width), w, 3)
        ref = cv2.resize(frame.colour(rect), (out.shape[1], out.shape[0]), interpolation=cv2.INTER_AREA)
        assert np.abs(out.astype(int) - ref).mean() < 2.5, rect


def test_blanking_at_display_size_covers_every_pixel_a_box_reaches():
    display = np.full((240, 427, 3), 200, np.uint8)
    box = TextBox(101, 37, 250, 80)                    # full-size 1280x720 crop coordinates
    sx, sy = 427 / 1280, 240 / 720
    blank_scaled(display, [box], sx, sy)
    full = np.zeros((720, 1280), np.uint8)
    full[box.y0:box.y1, box.x0:box.x1] = 255
    reached = cv2.resize(full, (427, 240), interpolation=cv2.INTER_AREA) > 0
    assert (display[reached] == 0).all()
    assert (display.max(axis=2) == 0).sum() <= reached.sum() + 2 * (reached.any(axis=0).sum() + reached.any(axis=1).sum())


def test_mostly_coloured_crop_takes_the_full_size_path():
    img = np.zeros((720, 1280, 3), np.uint8)
    img[:, :, 2] = 90                                   # a dark red screen: colour everywhere
    cv2.putText(img, LINE, (200, 300), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2, cv2.LINE_AA)
    frame = yuv_frame(img)
    rect = CropRect(0, 0, 1280, 720)
    assert detection_copy(frame, rect, work_factor(1280)) is None
    display, boxes = display_and_boxes(frame, rect, 640)
    assert boxes == find_text_boxes(frame.colour(rect)) and boxes
    assert display.shape == (360, 640, 3)


def test_colour_working_copy_at_1080p_with_odd_sizes_is_the_full_size_copy_shrunk():
    """Session 7: the small copy's chroma is an integer area shrink from the crop's corner (OpenCV's fast
    path), not a resize of a region a fraction of a sample off (which drifted by up to half a chroma
    sample across the crop). On colour content with crops whose small size is odd (1080p, factor 3),
    it stays within a few levels of the full-size conversion shrunk, closer than the drifting resize
    was (max 7 / 11 levels for these crops)."""
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (1080, 1920, 3), np.uint8), (0, 0), 6)
    i420 = cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420)
    for rect, max_diff, mean_diff in ((CropRect(200, 100, 1720, 1040), 5, 0.65),
                                      (CropRect(186, 114, 1614, 1078), 5, 0.65),
                                      (CropRect(187, 113, 1613, 1077), 8, 0.8)):
        f = work_factor(rect.width)
        assert f == 3
        crop = yuv.to_bgr(i420, 1080, 1920, rect)
        h, w = crop.shape[:2]
        ref = cv2.resize(crop[:h // f * f, :w // f * f], (w // f, h // f), interpolation=cv2.INTER_AREA)
        small = yuv.to_bgr_shrunk(i420, 1080, 1920, rect, f)
        assert small.shape == ref.shape and (small.shape[0] % 2 == 1 or small.shape[1] % 2 == 1 or rect.x0 % 2)
        diff = np.abs(small.astype(int) - ref)
        assert diff.max() <= max_diff and diff.mean() < mean_diff, (rect.as_list(), diff.max(), diff.mean())

"""OpenVLA-OFT's evaluation image chain, reproduced without TensorFlow.

The authors' LIBERO evaluation (which LightVLA reuses) does not hand camera frames to the processor as they are:
each one goes through a JPEG round trip and TensorFlow's antialiased Lanczos-3 resize to 224x224, which is what the
dataset builder did to every training image, and then through the 90%-area centre crop with TensorFlow's
``crop_and_resize``, the deterministic centre of the training-time random crop. The checkpoints expect those exact
pixels, and plain Pillow stand-ins land up to 42 grey levels away (the resize) and up to 179 (an integer crop), so
every step here repeats TensorFlow's float32 arithmetic operation by operation, in TensorFlow's order.
``../shared/fixtures/oft-eval-preprocessing`` holds the golden arrays this is tested against; every stage matches
them bit for bit, as it did TensorFlow 2.21 itself on about 100 more images (noise, sharp-edged and smooth scenes
from 100x700 to 720x1280, up- and downsampling, and LIBERO-like frames), the resize's float32 values included.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
from functools import lru_cache

import numpy as np
import simplejpeg
from PIL import Image

JPEG_QUALITY = 95
LANCZOS_RADIUS = np.float32(3.0)
LANCZOS_PI = np.float32(3.14159265359)  # the constant TensorFlow's kernel uses, rounded to float32 like there

F32 = np.float32

_LIBM = ctypes.CDLL(ctypes.util.find_library("m"))
_LIBM.sinf.argtypes = [ctypes.c_float]
_LIBM.sinf.restype = ctypes.c_float


def jpeg_round_trip(image: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """``tf.io.decode_image(tf.image.encode_jpeg(image))``: uint8 RGB HxWx3 in and out.

    Pillow's libjpeg-turbo encoder at TF's defaults (4:2:0 chroma, baseline, accurate forward DCT) writes the same
    scan data as TF. TF decodes with libjpeg-turbo's fast integer IDCT and fancy upsampling; Pillow always uses the
    accurate IDCT (up to 19 grey levels away), so the decoding goes through simplejpeg, which exposes the choice.
    """
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), "RGB").save(buffer, "JPEG", quality=quality, subsampling="4:2:0")
    return simplejpeg.decode_jpeg(buffer.getvalue(), colorspace="RGB", fastdct=True, fastupsample=False)


def _sinf(x: np.ndarray) -> np.ndarray:
    """The C library's ``sinf``, which TF's ``std::sin(float)`` calls: it is not always correctly rounded, and
    numpy's float32 sine or a rounded float64 one each differ from it by an ulp on a few percent of the taps."""
    return np.array([_LIBM.sinf(value) for value in x.ravel().tolist()], F32).reshape(x.shape)


def _lanczos3(x: np.ndarray) -> np.ndarray:
    """TF's Lanczos-3 kernel, in float32 like there."""
    x = np.abs(x)
    phase = LANCZOS_PI * x
    sin_phase = _sinf(phase)
    sin_window = _sinf(phase / LANCZOS_RADIUS)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = LANCZOS_RADIUS * sin_phase * sin_window / (LANCZOS_PI * LANCZOS_PI * x * x)
    value = np.where(x.astype(np.float64) <= 1e-3, F32(1.0), value)  # C++ compares with the double 1e-3
    return np.where(x > LANCZOS_RADIUS, F32(0.0), value).astype(F32)


@lru_cache(maxsize=32)
def lanczos3_taps(output_size: int, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and normalised weights, both (output_size, span), of each output sample.

    TF's ``ScaleAndTranslate`` with antialiasing and no translation: sample ``i`` sits at ``(i + 0.5) / scale`` in
    source pixels, the kernel is widened by ``1 / scale`` when downsampling, taps outside the image are dropped and
    the rest renormalised. Taps past a sample's own span carry weight 0 (and an index clamped into the image).
    """
    scale = F32(output_size) / F32(input_size)
    inv_scale = F32(1.0 / float(scale))  # C++ divides in double here, then stores a float
    kernel_scale = max(inv_scale, F32(1.0))
    reach = LANCZOS_RADIUS * kernel_scale
    span = min(2 * int(np.ceil(reach)) + 1, input_size)
    centres = (np.arange(output_size, dtype=F32) + F32(0.5)) * inv_scale
    starts = np.clip(np.ceil(centres - reach - F32(0.5)), 0, input_size - 1).astype(np.int64)
    ends = np.clip(np.floor(centres + reach - F32(0.5)), 0, input_size - 1).astype(np.int64) + 1
    offsets = np.arange(span)
    sources = starts[:, None] + offsets[None, :]
    in_span = offsets[None, :] < (ends - starts)[:, None]
    positions = (sources.astype(F32) + F32(0.5)) - centres[:, None]
    weights = np.where(in_span, _lanczos3(positions * (F32(1.0) / kernel_scale)), F32(0.0))
    total = np.zeros(output_size, F32)
    for k in range(span):  # summed tap by tap, as TF does
        total += weights[:, k]
    weights = weights * (F32(1.0) / total)[:, None]
    indices = np.minimum(sources, input_size - 1)
    indices.setflags(write=False)
    weights.setflags(write=False)
    return indices, weights


def _gather_rows(image: np.ndarray, indices: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted sums of rows, accumulated tap by tap in float32 (the order of TF's GatherRows/GatherColumns).

    One scratch buffer is reused across taps: fresh image-sized temporaries cost more in page faults than the
    arithmetic."""
    total = np.take(image, indices[:, 0], axis=0)
    total *= weights[:, 0, None, None]  # TF starts from 0 and adds this product: the same float
    term = np.empty_like(total)
    for k in range(1, weights.shape[1]):
        np.take(image, indices[:, k], axis=0, out=term)
        term *= weights[:, k, None, None]
        total += term
    return total


def lanczos3_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``tf.image.resize(image, (height, width), "lanczos3", antialias=True)``, rounded half to even and clipped to
    uint8 as the authors' ``resize_image_for_policy`` does. Each axis is scaled on its own (no aspect preservation);
    rows first, then columns (on the transposed image, for contiguous memory), with no rounding in between."""
    rows = _gather_rows(image.astype(F32), *lanczos3_taps(height, image.shape[0]))
    columns = _gather_rows(np.ascontiguousarray(rows.transpose(1, 0, 2)), *lanczos3_taps(width, image.shape[1]))
    return np.ascontiguousarray(np.clip(np.round(columns), 0, 255).astype(np.uint8).transpose(1, 0, 2))


def _crop_grid(input_size: int, low: np.float32, high: np.float32, output_size: int):
    """Corner-aligned bilinear sample positions of ``crop_and_resize``: neighbours and float32 lerp weights."""
    step = (high - low) * F32(input_size - 1) / F32(output_size - 1)
    positions = low * F32(input_size - 1) + np.arange(output_size, dtype=F32) * step
    before = np.floor(positions).astype(np.int64)
    after = np.ceil(positions).astype(np.int64)
    return before, after, positions - before.astype(F32)


def centre_crop_resize(image: np.ndarray, area_fraction: float) -> np.ndarray:
    """The authors' ``center_crop_image``: the centred box keeping ``area_fraction`` of the area, resized back to
    the input size with ``tf.image.crop_and_resize`` (bilinear), uint8 in and out.

    The image becomes float32 ``x * (1/255)``; the box side is ``sqrt(area_fraction)`` in float32; the result is
    clipped to [0, 1] and converted back by truncating ``x * 255.5`` (TF's ``convert_image_dtype``), not rounding.
    """
    height, width = image.shape[:2]
    side = np.clip(np.sqrt(F32(area_fraction)), F32(0.0), F32(1.0))
    low = (F32(1.0) - side) / F32(2.0)
    high = low + side
    pixels = image.astype(F32) * F32(1.0 / 255.0)
    top, bottom, y_lerp = _crop_grid(height, low, high, height)
    left, right, x_lerp = _crop_grid(width, low, high, width)
    x_lerp = np.repeat(x_lerp[:, None], image.shape[2], axis=1)  # a real (W, C) array: fast inner loops
    rows = np.take(pixels, np.concatenate([top, bottom]), axis=0)
    lefts, rights = np.take(rows, left, axis=1), np.take(rows, right, axis=1)
    rights -= lefts  # in place from here on, in TF's order: left + (right - left) * x_lerp, per row
    rights *= x_lerp
    lefts += rights
    upper, lower = lefts[:height], lefts[height:]
    lower -= upper  # upper + (lower - upper) * y_lerp
    lower *= y_lerp[:, None, None]
    upper += lower
    np.clip(upper, F32(0.0), F32(1.0), out=upper)
    upper *= F32(255.5)
    return upper.astype(np.uint8)


def oft_eval_frame(image: np.ndarray, size: int, crop_area: float | None) -> np.ndarray:
    """One camera frame (uint8 RGB HxWx3, already in the training orientation) -> the size x size uint8 image the
    authors hand to the processor: JPEG round trip, Lanczos-3 resize, then the centre crop when ``crop_area`` is
    given."""
    frame = lanczos3_resize(jpeg_round_trip(image), size, size)
    return frame if crop_area is None else centre_crop_resize(frame, crop_area)

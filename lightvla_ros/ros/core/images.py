"""Decode camera messages into the HxWx3 uint8 RGB arrays the policy expects.

Works on duck-typed ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` objects. The common
encodings are decoded with numpy (no cv_bridge needed: its binary builds break under NumPy 2, and
the PyPI ROS wheels lack it); other encodings (YUV, Bayer, ...) go through cv_bridge when a ROS
install provides a working one.
"""

from __future__ import annotations

import functools
import io
from typing import Any

import numpy as np

# encoding -> (channels, bytes per channel, colour order of the stored channels)
_ENCODINGS: dict[str, tuple[int, int, str]] = {
    'rgb8': (3, 1, 'rgb'),
    'bgr8': (3, 1, 'bgr'),
    'rgba8': (4, 1, 'rgba'),
    'bgra8': (4, 1, 'bgra'),
    'mono8': (1, 1, 'mono'),
    '8uc1': (1, 1, 'mono'),
    '8uc3': (3, 1, 'bgr'),
    'rgb16': (3, 2, 'rgb'),
    'bgr16': (3, 2, 'bgr'),
    'mono16': (1, 2, 'mono'),
}

SUPPORTED_ENCODINGS: tuple[str, ...] = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8',
                                        'rgb16', 'bgr16', 'mono16')

# Largest frame decoded (raw or compressed): a bigger one would take gigabytes and seconds to decode.
MAX_IMAGE_PIXELS = 8192 * 8192


class ImageDecodeError(ValueError):
    """A camera message that cannot be turned into an RGB image; the text says why."""


def _as_bytes(data: Any) -> memoryview:
    try:
        return memoryview(data).cast('B')
    except TypeError:
        return memoryview(bytes(data))


@functools.lru_cache(maxsize=1)
def _cv_bridge() -> Any:
    """A CvBridge when one imports and works here, else None."""
    try:
        from cv_bridge import CvBridge

        return CvBridge()
    except Exception:  # missing, or built against another NumPy ABI
        return None


def _decode_with_cv_bridge(msg: Any, encoding: str) -> np.ndarray:
    bridge = _cv_bridge()
    if bridge is None:
        raise ImageDecodeError(
            f"unsupported encoding '{encoding}' (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    try:
        rgb = bridge.imgmsg_to_cv2(msg, desired_encoding='rgb8')
    except Exception as exc:
        raise ImageDecodeError(f"unsupported encoding '{encoding}' (cv_bridge: {exc})") from exc
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.size == 0:
        raise ImageDecodeError(f"cv_bridge returned a {rgb.shape} {rgb.dtype} array for "
                               f"encoding '{encoding}'")
    return np.ascontiguousarray(rgb)


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageDecodeError(f'image too large ({width}x{height} = {width * height} pixels; the limit '
                               f'is {MAX_IMAGE_PIXELS} pixels, 8192x8192)')


def decode_raw_image(msg: Any) -> np.ndarray:
    """Return an HxWx3 uint8 RGB copy of a ``sensor_msgs/Image``.

    Honours ``step`` (row padding) and ``is_bigendian`` (16-bit encodings are scaled to 8 bits).
    """
    encoding = str(msg.encoding).strip()
    spec = _ENCODINGS.get(encoding.lower())
    if spec is None:
        return _decode_with_cv_bridge(msg, encoding)
    channels, depth, order = spec
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f'zero-size image ({width}x{height})')
    _check_pixels(width, height)
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise ImageDecodeError(
            f'step {step} is smaller than width*channels*bytes = {row_bytes} for {encoding}')
    data = _as_bytes(msg.data)
    needed = step * (height - 1) + row_bytes
    if len(data) < needed:
        raise ImageDecodeError(
            f'data has {len(data)} bytes but {width}x{height} {encoding} with step {step} '
            f'needs {needed}')
    buf = np.frombuffer(data, dtype=np.uint8, count=needed)
    rows = np.lib.stride_tricks.as_strided(buf, shape=(height, row_bytes), strides=(step, 1))
    if depth == 2:
        dtype = np.dtype('>u2' if bool(msg.is_bigendian) else '<u2')
        pixels = (np.ascontiguousarray(rows).view(dtype) >> 8).astype(np.uint8)
    else:
        pixels = rows
    pixels = pixels.reshape(height, width, channels)
    if order == 'mono':
        rgb = np.repeat(pixels, 3, axis=2)
    elif order in ('bgr', 'bgra'):
        rgb = pixels[:, :, 2::-1]
    else:
        rgb = pixels[:, :, :3]
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def compressed_image_size(data: bytes | memoryview, fmt: str = '') -> tuple[int, int]:
    """(width, height) from the header of a compressed image, without decoding its pixels.

    Pillow reads only the header here (PNG IHDR, JPEG SOFn, ...). Sizes beyond Pillow's own
    decompression-bomb limit, which is above ``MAX_IMAGE_PIXELS``, arrive as its bomb error or warning.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f'compressed image too large (Pillow: {exc}); the limit is '
                               f'{MAX_IMAGE_PIXELS} pixels, 8192x8192') from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"compressed image (format '{fmt or 'unknown'}') could not be decoded: "
                               'unreadable header (not an image, or cut short)') from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"compressed image (format '{fmt or 'unknown'}') could not be decoded: "
                               f'unreadable header ({exc})') from exc
    return int(width), int(height)


def rgb8_from_pillow(image: Any) -> np.ndarray:
    """HxWx3 uint8 RGB from a Pillow image of any mode; 16-bit greyscale is scaled to 8 bits, not clipped."""
    if image.mode.startswith('I'):  # 16-bit grey PNG or TIFF: I;16, or I in older Pillow
        grey = (np.clip(np.asarray(image), 0, 0xFFFF) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.array(image.convert('RGB'))


def _decode_pixels(data: memoryview) -> np.ndarray:
    """Decode a compressed image whose header size has been checked.

    JPEG goes through libjpeg-turbo (simplejpeg) with the accurate integer IDCT and fancy upsampling, the
    libjpeg defaults, which give the same pixels OpenCV did; everything else (PNG, BMP, TIFF, WebP, ...)
    through Pillow. Alpha is dropped, not blended, and EXIF orientation is not applied: the policy sees the
    sensor's pixels.
    """
    if bytes(data[:3]) == b'\xff\xd8\xff':
        import simplejpeg

        return simplejpeg.decode_jpeg(data, colorspace='RGB', fastdct=False, fastupsample=False)
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return rgb8_from_pillow(image)


def decode_compressed_image(msg: Any) -> np.ndarray:
    """Return an HxWx3 uint8 RGB array from a ``sensor_msgs/CompressedImage`` (JPEG, PNG, ...).

    The size in the header is checked first: a few kilobytes of PNG can declare 10000x10000 pixels.
    """
    fmt = str(getattr(msg, 'format', ''))
    data = _as_bytes(msg.data)
    if len(data) == 0:
        raise ImageDecodeError('compressed image has no data')
    width, height = compressed_image_size(data, fmt)
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f'zero-size image ({width}x{height})')
    _check_pixels(width, height)
    try:
        return _decode_pixels(data)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # what libjpeg-turbo and Pillow raise on bad data
        raise ImageDecodeError(f"compressed image (format '{fmt or 'unknown'}') could not be decoded "
                               f'({exc})') from exc


def decode_image(msg: Any, compressed: bool) -> np.ndarray:
    """Decode either message kind; ``compressed`` selects the decoder."""
    return decode_compressed_image(msg) if compressed else decode_raw_image(msg)


def encode_rgb_fields(rgb: np.ndarray) -> dict[str, Any]:
    """Field values for a ``sensor_msgs/Image`` carrying ``rgb`` (HxWx3 uint8) as rgb8."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError('expected an HxWx3 uint8 array')
    height, width = int(rgb.shape[0]), int(rgb.shape[1])
    return {'height': height, 'width': width, 'encoding': 'rgb8', 'is_bigendian': 0,
            'step': width * 3, 'data': np.ascontiguousarray(rgb).tobytes()}

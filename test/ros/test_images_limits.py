"""Compressed frames are size-checked from their header before any pixel is decoded.

A few kilobytes of PNG or JPEG can declare 10000x10000 pixels; decoding one took the node from 1 to 2.5 GB
and blocked inference for 10 s. Such frames are refused like an oversized raw frame, without reaching the
decoder.
"""

from __future__ import annotations

import io
import struct
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from lightvla_ros.ros.core import images
from lightvla_ros.ros.core.images import (
    MAX_IMAGE_PIXELS,
    ImageDecodeError,
    compressed_image_size,
    decode_compressed_image,
    decode_raw_image,
)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack('>I', len(payload)) + kind + payload
            + struct.pack('>I', zlib.crc32(kind + payload) & 0xFFFFFFFF))


def png_bomb(width: int, height: int, rows: int | None = None) -> bytes:
    """A 1-bit greyscale PNG of all-black pixels: kilobytes on the wire, width*height*3 bytes decoded."""
    row = b'\0' * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    body = b''.join(compressor.compress(row) for _ in range(height if rows is None else rows))
    ihdr = struct.pack('>IIBBBBB', width, height, 1, 0, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', ihdr)
            + _png_chunk(b'IDAT', body + compressor.flush()) + _png_chunk(b'IEND', b''))


def jpeg_with_size(width: int, height: int) -> bytes:
    """A real 16x16 JPEG whose frame header (SOF0) claims another size."""
    data = bytearray(simplejpeg.encode_jpeg(np.zeros((16, 16, 3), np.uint8), colorspace='RGB'))
    sof = data.index(b'\xff\xc0')
    data[sof + 5:sof + 9] = struct.pack('>HH', height, width)  # marker, length(2), precision(1), then H, W
    return bytes(data)


@pytest.fixture
def decoder_must_not_run(monkeypatch):
    """The refusal happens before the pixels are decoded."""
    def decode_pixels(*args, **kwargs):
        raise AssertionError('the decoder was reached for an oversized frame')

    monkeypatch.setattr(images, '_decode_pixels', decode_pixels)


def compressed(data: bytes, fmt: str) -> SimpleNamespace:
    return SimpleNamespace(format=fmt, data=data)


def test_the_limit_is_the_raw_frame_limit():
    raw = SimpleNamespace(height=8192, width=8193, encoding='rgb8', step=8193 * 3, is_bigendian=0, data=b'')
    with pytest.raises(ImageDecodeError, match=f'8193x8192 = {8193 * 8192} pixels.*limit is {MAX_IMAGE_PIXELS}'):
        decode_raw_image(raw)


@pytest.mark.parametrize('width,height', [(10000, 10000), (8193, 8192), (100, 700000)])
def test_png_bomb_is_refused_before_decoding(width, height, decoder_must_not_run):
    bomb = png_bomb(width, height)
    assert len(bomb) < 200_000
    with pytest.raises(ImageDecodeError, match=f'too large.*limit is {MAX_IMAGE_PIXELS} pixels'):
        decode_compressed_image(compressed(bomb, 'png'))


def test_png_bomb_beyond_pillows_own_limit_is_refused_the_same_way(decoder_must_not_run):
    bomb = png_bomb(60000, 60000, rows=10)  # 3.6e9 pixels: Pillow raises its decompression-bomb error
    with pytest.raises(ImageDecodeError, match=f'too large.*limit is {MAX_IMAGE_PIXELS} pixels'):
        decode_compressed_image(compressed(bomb, 'png'))


@pytest.mark.parametrize('width,height', [(10000, 10000), (65000, 65000)])
def test_jpeg_bomb_is_refused_before_decoding(width, height, decoder_must_not_run):
    with pytest.raises(ImageDecodeError, match='too large'):
        decode_compressed_image(compressed(jpeg_with_size(width, height), 'jpeg'))


def test_header_sizes_are_read_without_decoding(decoder_must_not_run):
    assert compressed_image_size(png_bomb(10000, 10000, rows=1)) == (10000, 10000)
    assert compressed_image_size(jpeg_with_size(640, 480)) == (640, 480)


@pytest.mark.parametrize('fmt', ['png', 'jpeg'])
def test_frames_at_camera_sizes_still_decode(fmt):
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[100:200, 300:400] = (250, 10, 10)
    encoded = io.BytesIO()
    Image.fromarray(rgb).save(encoded, format=fmt)
    out = decode_compressed_image(compressed(encoded.getvalue(), fmt))
    assert out.shape == (480, 640, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() < 2


def test_a_frame_at_the_limit_is_decoded(monkeypatch):
    monkeypatch.setattr(images, 'MAX_IMAGE_PIXELS', 64 * 48)
    assert decode_compressed_image(compressed(png_bomb(64, 48), 'png')).shape == (48, 64, 3)
    with pytest.raises(ImageDecodeError, match='64x49'):
        decode_compressed_image(compressed(png_bomb(64, 49), 'png'))


@pytest.mark.parametrize('data', [
    png_bomb(64, 48)[:20],                                    # cut inside IHDR
    b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IEND', b''),          # no IHDR at all
    jpeg_with_size(640, 480)[:40],                           # cut before the frame header
    b'GIF89a\xff',                                           # known magic, truncated
    bytes(range(256)),                                       # no known format
])
def test_corrupt_headers_are_explained(data, decoder_must_not_run):
    with pytest.raises(ImageDecodeError, match=r"\(format 'png'\) could not be decoded: unreadable header"):
        decode_compressed_image(compressed(data, 'png'))

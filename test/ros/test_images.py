"""Image decoding from duck-typed sensor_msgs/Image and CompressedImage messages."""

import io
from types import SimpleNamespace

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from lightvla_ros.ros.core.images import (
    ImageDecodeError,
    decode_compressed_image,
    decode_image,
    decode_raw_image,
    encode_rgb_fields,
)

RGB = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)


def raw(pixels: np.ndarray, encoding: str, pad: int = 0,
        bigendian: bool = False) -> SimpleNamespace:
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1).view(np.uint8)
    padded = np.zeros((h, rows.shape[1] + pad), np.uint8)
    padded[:, :rows.shape[1]] = rows
    return SimpleNamespace(height=h, width=w, encoding=encoding, step=padded.shape[1],
                           is_bigendian=int(bigendian), data=padded.tobytes())


@pytest.mark.parametrize('encoding,pixels', [
    ('rgb8', RGB), ('bgr8', RGB[:, :, ::-1]),
    ('rgba8', np.dstack([RGB, np.full(RGB.shape[:2], 9, np.uint8)])),
    ('bgra8', np.dstack([RGB[:, :, ::-1], np.full(RGB.shape[:2], 9, np.uint8)])),
])
@pytest.mark.parametrize('pad', [0, 3])
def test_colour_encodings_give_rgb(encoding, pixels, pad):
    out = decode_raw_image(raw(np.ascontiguousarray(pixels), encoding, pad))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, RGB)


def test_mono8_is_replicated():
    grey = RGB[:, :, 0:1].copy()
    out = decode_raw_image(raw(grey, 'mono8', pad=1))
    np.testing.assert_array_equal(out, np.repeat(grey, 3, axis=2))


@pytest.mark.parametrize('bigendian', [False, True])
def test_16bit_honours_endianness(bigendian):
    values = (RGB.astype(np.uint16) << 8) | 0x7F
    pixels = values.astype('>u2' if bigendian else '<u2')
    out = decode_raw_image(raw(pixels, 'rgb16', bigendian=bigendian))
    np.testing.assert_array_equal(out, RGB)


@pytest.mark.parametrize('msg,needle', [
    (raw(RGB, 'no_such_encoding'), 'unsupported encoding'),
    (SimpleNamespace(height=0, width=4, encoding='rgb8', step=12, is_bigendian=0, data=b''),
     'zero-size'),
    (SimpleNamespace(height=2, width=4, encoding='rgb8', step=12, is_bigendian=0,
                     data=b'\0' * 10), 'needs 24'),
    (SimpleNamespace(height=2, width=4, encoding='rgb8', step=8, is_bigendian=0,
                     data=b'\0' * 24), 'step 8'),
])
def test_bad_raw_images_are_explained(msg, needle):
    with pytest.raises(ImageDecodeError, match=needle):
        decode_raw_image(msg)


def encoded(image: Image.Image, fmt: str, **options) -> SimpleNamespace:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return SimpleNamespace(format=fmt.lower(), data=buffer.getvalue())


def test_compressed_roundtrip_and_failure():
    out = decode_compressed_image(encoded(Image.fromarray(RGB), 'PNG'))
    np.testing.assert_array_equal(out, RGB)
    with pytest.raises(ImageDecodeError, match='could not be decoded'):
        decode_image(SimpleNamespace(format='jpeg', data=b'not a jpeg at all'), compressed=True)
    with pytest.raises(ImageDecodeError, match='no data'):
        decode_image(SimpleNamespace(format='jpeg', data=b''), compressed=True)


@pytest.mark.parametrize('fmt,options', [('PNG', {}), ('BMP', {}), ('TIFF', {}), ('WEBP', {'lossless': True})])
def test_lossless_formats_decode_exactly(fmt, options):
    out = decode_compressed_image(encoded(Image.fromarray(RGB), fmt, **options))
    np.testing.assert_array_equal(out, RGB)


@pytest.mark.parametrize('mode', ['L', 'P', 'RGBA', 'LA', '1'])
def test_every_pillow_mode_becomes_rgb8(mode):
    image = Image.fromarray(RGB).convert(mode)
    out = decode_compressed_image(encoded(image, 'PNG'))
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(image.convert('RGB')))


def test_alpha_is_dropped_not_blended():
    rgba = np.dstack([RGB, np.zeros((5, 7), np.uint8)])
    np.testing.assert_array_equal(decode_compressed_image(encoded(Image.fromarray(rgba), 'PNG')), RGB)


def test_16_bit_greyscale_png_is_scaled_to_8_bits_not_clipped():
    grey = np.linspace(0, 65535, 35, dtype=np.uint16).reshape(5, 7)
    image = Image.fromarray(grey)
    assert image.mode == 'I;16'
    out = decode_compressed_image(encoded(image, 'PNG'))
    np.testing.assert_array_equal(out, np.repeat((grey >> 8).astype(np.uint8)[:, :, None], 3, axis=2))


def test_jpeg_decodes_with_the_accurate_idct():
    """Camera frames get libjpeg's default (accurate) IDCT, the pixels Pillow and OpenCV give, not the fast one."""
    rgb = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    msg = encoded(Image.fromarray(rgb), 'JPEG', quality=90)
    out = decode_compressed_image(msg)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(Image.open(io.BytesIO(msg.data)).convert('RGB')))
    assert not np.array_equal(out, simplejpeg.decode_jpeg(msg.data, colorspace='RGB', fastdct=True))


def test_greyscale_jpeg_becomes_rgb8():
    out = decode_compressed_image(encoded(Image.fromarray(RGB).convert('L'), 'JPEG'))
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    assert (out[:, :, 0] == out[:, :, 1]).all() and (out[:, :, 1] == out[:, :, 2]).all()


def test_corrupt_pixel_data_is_explained():
    png = encoded(Image.fromarray(RGB), 'PNG').data
    jpeg = encoded(Image.fromarray(RGB), 'JPEG').data
    for fmt, data in (('png', png[:-30]), ('jpeg', jpeg[:len(jpeg) // 2])):
        with pytest.raises(ImageDecodeError, match=f"format '{fmt}'.* could not be decoded"):
            decode_compressed_image(SimpleNamespace(format=fmt, data=data))


def test_encode_rgb_fields_roundtrip():
    fields = encode_rgb_fields(RGB)
    assert fields['encoding'] == 'rgb8' and fields['step'] == 21
    np.testing.assert_array_equal(decode_raw_image(SimpleNamespace(**fields)), RGB)
    with pytest.raises(ValueError):
        encode_rgb_fields(RGB[:, :, 0])

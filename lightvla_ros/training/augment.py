"""The reference's training-time image augmentation (docs/model-notes.md §1), applied per camera image before processing.

In order: a random crop of 90% of the area (same aspect, ratio 1) resized back to the image size, then brightness
(+-0.2, additive), contrast [0.8, 1.2], saturation [0.8, 1.2] and hue (+-0.05 of the colour circle), clipping to
[0, 1] after each step. The crop has the geometry of ``processing.center_crop`` at a random position, which is why
a model trained with it must be run with the centre crop (``--center-crop``, the node's ``center_crop: true``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from lightvla_ros.model.processing import CENTER_CROP_AREA


@dataclass(frozen=True)
class Augmentation:
    crop_area: float = CENTER_CROP_AREA
    brightness: float = 0.2
    contrast: tuple[float, float] = (0.8, 1.2)
    saturation: tuple[float, float] = (0.8, 1.2)
    hue: float = 0.05

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> augmented RGB uint8 of the same size."""
        pil = Image.fromarray(image, "RGB")
        width, height = pil.size
        side = math.sqrt(self.crop_area)
        crop_w, crop_h = width * side, height * side
        left, top = rng.uniform(0.0, width - crop_w), rng.uniform(0.0, height - crop_h)
        pil = pil.resize((width, height), Image.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
        x = np.asarray(pil, dtype=np.float32) / 255.0
        x = np.clip(x + rng.uniform(-self.brightness, self.brightness), 0.0, 1.0)
        mean = x.mean(axis=(0, 1), keepdims=True)
        x = np.clip((x - mean) * rng.uniform(*self.contrast) + mean, 0.0, 1.0)
        h, s, v = rgb_to_hsv(x)
        s = np.clip(s * rng.uniform(*self.saturation), 0.0, 1.0)
        h = (h + rng.uniform(-self.hue, self.hue)) % 1.0
        x = np.clip(hsv_to_rgb(h, s, v), 0.0, 1.0)
        return np.round(x * 255.0).astype(np.uint8)


def rgb_to_hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in [0, 1), saturation and value in [0, 1], from RGB floats in [0, 1]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(-1)
    delta = v - rgb.min(-1)
    s = np.where(v > 0, delta / np.maximum(v, 1e-12), 0.0)
    safe = np.maximum(delta, 1e-12)
    h = np.where(v == r, (g - b) / safe, np.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = np.where(delta > 0, (h / 6.0) % 1.0, 0.0)
    return h, s, v


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hsv`."""
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    i = i.astype(np.int64) % 6
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1)

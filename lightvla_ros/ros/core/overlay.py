"""Debug overlay: each camera image with the visual tokens the pruner kept highlighted.

Pure numpy on RGB arrays; the node calls it only while someone subscribes to ``~/debug_image``.
"""

from __future__ import annotations

import math

import numpy as np

from lightvla_ros.model.configuration import CENTER_CROP_AREA

KEPT_BORDER = np.array([40, 230, 90], dtype=np.uint8)
PRUNED_FACTOR = 0.3


def _center_crop(image: np.ndarray, area: float) -> np.ndarray:
    scale = math.sqrt(area)
    h, w = image.shape[:2]
    ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[top:top + ch, left:left + cw]


def _resize_nearest(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    rows = (np.arange(size) * h // size).clip(0, h - 1)
    cols = (np.arange(size) * w // size).clip(0, w - 1)
    return image[rows][:, cols]


def render_token_overlay(images: list[np.ndarray], kept_patch_indices: np.ndarray,
                         patches_per_image: int, grid_size: int, center_crop: bool = False,
                         tile: int = 224) -> np.ndarray:
    """Side-by-side tiles (one per camera) with pruned patches dimmed and kept ones outlined.

    Image ``k`` owns the patch indices ``[k * P, (k + 1) * P)`` in row-major grid order, matching
    the policy's ``kept_patch_indices``. With ``center_crop`` the tile shows the cropped region the
    model actually saw.
    """
    if grid_size * grid_size != patches_per_image:
        raise ValueError('patches_per_image must equal grid_size squared')
    kept = np.zeros(len(images) * patches_per_image, dtype=bool)
    indices = np.asarray(kept_patch_indices, dtype=np.int64)
    indices = indices[(indices >= 0) & (indices < kept.size)]
    kept[indices] = True
    cell = max(1, tile // grid_size)
    tile = cell * grid_size
    tiles = []
    for k, image in enumerate(images):
        view = _center_crop(image, CENTER_CROP_AREA) if center_crop else image
        out = _resize_nearest(view, tile).astype(np.float32)
        own = kept[k * patches_per_image:(k + 1) * patches_per_image]
        mask = own.reshape(grid_size, grid_size)
        pixel_mask = np.kron(mask, np.ones((cell, cell), dtype=bool))
        out[~pixel_mask] *= PRUNED_FACTOR
        out = out.astype(np.uint8)
        edges = np.zeros((tile, tile), dtype=bool)
        edges[::cell, :] = True
        edges[:, ::cell] = True
        edges[cell - 1::cell, :] = True
        edges[:, cell - 1::cell] = True
        out[edges & pixel_mask] = KEPT_BORDER
        tiles.append(out)
    separator = np.full((tile, 4, 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for i, t in enumerate(tiles):
        if i:
            parts.append(separator)
        parts.append(t)
    return np.ascontiguousarray(np.concatenate(parts, axis=1))

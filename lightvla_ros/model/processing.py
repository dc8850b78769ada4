"""Turning observations into model inputs and model outputs into robot actions.

- Images: first what reaches the processor, by ``preprocessing``: ``oft`` is the authors' evaluation chain (JPEG
  round trip, TF Lanczos-3 resize to 224x224, TF centre crop when asked; :mod:`eval_preprocessing`), what the
  OFT/LightVLA checkpoints were trained and scored on; ``plain`` hands the frame over as it is (Pillow centre crop
  when asked), for checkpoints trained on frames that skipped that chain, like those of ``lightvla train``. Then the
  reference processor's ``resize-naive`` path (PIL bicubic, antialiased, to 224x224; nothing to do after ``oft``)
  and the DINOv2 and SigLIP normalisations stacked on the channel axis.
- Prompt: ``In: What action should the robot take to {instruction.lower()}?\\nOut:`` tokenised with BOS, then
  token 29871, the action slots and the stop token; built once per distinct instruction.
- Normalisation: q01/q99 bounds (``BOUNDS_Q99``) with clipping for the state; un-normalisation of the actions
  on the masked dimensions only (the gripper passes through).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from lightvla_ros.model.configuration import CENTER_CROP_AREA, PREPROCESSING_CHOICES
from lightvla_ros.model.errors import CheckpointError, InputError
from lightvla_ros.model.eval_preprocessing import oft_eval_frame

DEFAULT_MEANS = ((0.485, 0.456, 0.406), (0.5, 0.5, 0.5))
DEFAULT_STDS = ((0.229, 0.224, 0.225), (0.5, 0.5, 0.5))
PREPROCESSING_MODES = PREPROCESSING_CHOICES[1:]  # what a frame actually goes through (auto resolves to one)
PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"
MAX_INSTRUCTION_CHARS = 1000


def center_crop(image: Image.Image, area_fraction: float = CENTER_CROP_AREA) -> Image.Image:
    """Centred crop keeping ``area_fraction`` of the area, resized back to the original size (bilinear).

    Matches the crop-and-resize that the training-time random resized crop (scale 0.9, ratio 1) is centred on.
    """
    width, height = image.size
    side = math.sqrt(area_fraction)
    crop_w, crop_h = width * side, height * side
    left, top = (width - crop_w) / 2, (height - crop_h) / 2
    return image.resize((width, height), Image.BILINEAR, box=(left, top, left + crop_w, top + crop_h))


@dataclass
class ImageProcessor:
    """Reproduces the checkpoint's ``PrismaticImageProcessor`` (resize-naive, bicubic, dual normalisation)."""

    size: int = 224
    means: Sequence[Sequence[float]] = DEFAULT_MEANS
    stds: Sequence[Sequence[float]] = DEFAULT_STDS

    @classmethod
    def from_file(cls, path: Path, num_featurizers: int) -> "ImageProcessor":
        if not path.exists():
            return cls(means=DEFAULT_MEANS[:num_featurizers], stds=DEFAULT_STDS[:num_featurizers])
        cfg = json.loads(path.read_text())
        strategy = cfg.get("image_resize_strategy", "resize-naive")
        if strategy != "resize-naive":
            raise CheckpointError(f"image_resize_strategy {strategy!r} is not supported (only 'resize-naive')")
        size = int(cfg.get("input_sizes", [[3, 224, 224]])[0][-1])
        return cls(size=size, means=cfg.get("means", DEFAULT_MEANS)[:num_featurizers], stds=cfg.get("stds", DEFAULT_STDS)[:num_featurizers])

    def to_pil(self, image: Any, camera: int) -> Image.Image:
        if isinstance(image, Image.Image):
            return image.convert("RGB")
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3:
            raise InputError(f"image {camera} has shape {array.shape}; expected an RGB image of shape (H, W, 3)")
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise InputError(f"image {camera} is empty (shape {array.shape})")
        if array.dtype != np.uint8:
            raise InputError(f"image {camera} has dtype {array.dtype}; expected uint8 RGB values 0..255")
        return Image.fromarray(np.ascontiguousarray(array), "RGB")

    def frame(self, image: Any, camera: int, crop: bool = False, preprocessing: str = "plain") -> Image.Image:
        """The RGB image that reaches the resize and normalisation (see the module docstring for the modes)."""
        pil = self.to_pil(image, camera)
        if preprocessing == "oft":
            return Image.fromarray(oft_eval_frame(np.asarray(pil), self.size, CENTER_CROP_AREA if crop else None), "RGB")
        if preprocessing != "plain":
            raise InputError(f"preprocessing must be one of {', '.join(PREPROCESSING_MODES)}, got {preprocessing!r}")
        return center_crop(pil) if crop else pil

    def __call__(self, images: Sequence[Any], crop: bool = False, preprocessing: str = "plain") -> torch.Tensor:
        """Images (RGB uint8 HxWx3 arrays or PIL images) -> pixel values (num_images * 3 * featurizers, S, S)."""
        planes = []
        for camera, image in enumerate(images):
            pil = self.frame(image, camera, crop, preprocessing)
            pixels = np.asarray(pil.resize((self.size, self.size), Image.BICUBIC), dtype=np.float32) / 255.0
            for mean, std in zip(self.means, self.stds):
                planes.append(((pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(2, 0, 1))
        return torch.from_numpy(np.concatenate(planes, axis=0))


def pad_prompts(rows: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of prompts of different lengths as right-padded ids (B, longest) and their lengths (B,)."""
    ids = torch.full((len(rows), max(len(row) for row in rows)), pad_token_id, dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.as_tensor(row)
    return ids, torch.tensor([len(row) for row in rows])


class PromptBuilder:
    """Tokenises instructions into the model's text ids, caching each distinct instruction."""

    def __init__(self, tokenizer_path: Path, num_action_slots: int, stop_token_id: int, action_prefix_token_id: int | None,
                 max_tokens: int, cache_size: int = 64) -> None:
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # the tokenizers library raises plain Exceptions for missing/corrupt files
            raise CheckpointError(f"cannot load the tokenizer {tokenizer_path}: {exc}") from exc
        self.num_action_slots = num_action_slots
        self.stop_token_id = stop_token_id
        self.action_prefix_token_id = action_prefix_token_id
        self.max_tokens = max_tokens
        self.bos_token_id = self.tokenizer.token_to_id("<s>")
        self._cache: OrderedDict[str, list[int]] = OrderedDict()
        self._cache_size = cache_size

    @staticmethod
    def prompt(instruction: str) -> str:
        return PROMPT_TEMPLATE.format(instruction=instruction.lower())

    def prompt_ids(self, instruction: str) -> list[int]:
        """The tokenised prompt with BOS (what the reference tokenizer returns, before its appends)."""
        ids = self.tokenizer.encode(self.prompt(instruction)).ids
        if self.bos_token_id is not None and (not ids or ids[0] != self.bos_token_id):
            ids = [self.bos_token_id, *ids]
        return ids

    def __call__(self, instruction: str) -> list[int]:
        """``[BOS, prompt..., 29871, slot x num_action_slots, </s>]``."""
        text = validate_instruction(instruction)
        cached = self._cache.get(text)
        if cached is not None:
            self._cache.move_to_end(text)
            return cached
        ids = self.prompt_ids(text)
        if self.action_prefix_token_id is not None and ids[-1] != self.action_prefix_token_id:
            ids.append(self.action_prefix_token_id)
        ids += [0] * self.num_action_slots + [self.stop_token_id]  # slot ids are irrelevant: their embeddings are zeroed
        if len(ids) > self.max_tokens:
            raise InputError(f"instruction is too long: {len(ids)} text tokens, the model allows {self.max_tokens}; shorten it")
        self._cache[text] = ids
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return ids


def validate_instruction(instruction: Any) -> str:
    if not isinstance(instruction, str):
        raise InputError(f"instruction must be a string, got {type(instruction).__name__}")
    text = " ".join(instruction.split())
    if not text:
        raise InputError("instruction is empty: say what the robot should do, e.g. 'pick up the bowl'")
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise InputError(f"instruction is {len(text)} characters long; at most {MAX_INSTRUCTION_CHARS} are accepted")
    return text


class Normalizer:
    """q01/q99 (BOUNDS_Q99) normalisation of the state and un-normalisation of the actions for one dataset key."""

    def __init__(self, stats: dict[str, Any], key: str) -> None:
        self.key = key
        action = stats["action"]
        self.action_low = np.asarray(action["q01"], dtype=np.float64)
        self.action_high = np.asarray(action["q99"], dtype=np.float64)
        self.action_mask = np.asarray(action.get("mask", [True] * len(self.action_low)), dtype=bool)
        proprio = stats.get("proprio")
        self.proprio_low = np.asarray(proprio["q01"], dtype=np.float64) if proprio else None
        self.proprio_high = np.asarray(proprio["q99"], dtype=np.float64) if proprio else None

    @classmethod
    def from_statistics(cls, statistics: dict[str, Any], key: str | None) -> "Normalizer":
        if not statistics:
            raise CheckpointError("no dataset statistics: the checkpoint needs dataset_statistics.json (or norm_stats in config.json)")
        if key is None:
            if len(statistics) != 1:
                raise InputError(f"the checkpoint has statistics for several datasets; choose an unnorm key: {', '.join(sorted(statistics))}")
            key = next(iter(statistics))
        if key not in statistics:
            raise InputError(f"unknown unnorm key {key!r}; available: {', '.join(sorted(statistics))}")
        return cls(statistics[key], key)

    @property
    def proprio_dim(self) -> int | None:
        return None if self.proprio_low is None else len(self.proprio_low)

    def normalize_proprio(self, proprio: Any) -> np.ndarray:
        if self.proprio_low is None:
            raise InputError(f"dataset statistics {self.key!r} have no proprio entry")
        state = np.asarray(proprio, dtype=np.float64).reshape(-1)
        if state.shape[0] != len(self.proprio_low):
            raise InputError(f"robot state has {state.shape[0]} values; this checkpoint expects {len(self.proprio_low)}")
        if not np.all(np.isfinite(state)):
            bad = [i for i, v in enumerate(state) if not np.isfinite(v)]
            raise InputError(f"robot state has NaN/inf at index {bad}; refusing to act on it")
        span = self.proprio_high - self.proprio_low
        normalized = np.clip(2.0 * (state - self.proprio_low) / (span + 1e-8) - 1.0, -1.0, 1.0)
        return np.where(span == 0, 0.0, normalized).astype(np.float32)

    def unnormalize_actions(self, normalized: np.ndarray) -> np.ndarray:
        normalized = np.asarray(normalized, dtype=np.float64)
        full = 0.5 * (normalized + 1.0) * (self.action_high - self.action_low + 1e-8) + self.action_low
        return np.where(self.action_mask, full, normalized)

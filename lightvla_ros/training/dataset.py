"""Episodes -> model inputs: one sample per frame, the target being the normalised action chunk starting there.

Augmentation randomness is derived from (seed, epoch, sample index) rather than a global stream, so a run gives
the same batches whether it is interrupted and resumed, and whatever the number of loader workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lightvla_ros.model.processing import ImageProcessor, Normalizer, PromptBuilder, pad_prompts
from lightvla_ros.training.augment import Augmentation
from lightvla_ros.training.data import Episode, action_chunk
from lightvla_ros.training.statistics import normalize_actions


@dataclass
class Batch:
    pixel_values: torch.Tensor  # (B, C, S, S)
    text_ids: torch.Tensor  # (B, L) right-padded
    text_lengths: torch.Tensor  # (B,)
    proprio: torch.Tensor | None  # (B, state_dim) normalised
    actions: torch.Tensor  # (B, chunk_len, action_dim) normalised targets

    def to(self, device: torch.device) -> "Batch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.pixel_values), move(self.text_ids), move(self.text_lengths), move(self.proprio), move(self.actions))

    def __len__(self) -> int:
        return int(self.actions.shape[0])


class ChunkDataset(Dataset):
    """Frame t of an episode -> (images, prompt ids, normalised state, normalised actions[t : t + chunk_len])."""

    def __init__(
        self,
        episodes: Sequence[Episode],
        processor: ImageProcessor,
        prompts: PromptBuilder,
        normalizer: Normalizer,
        chunk_len: int,
        augmentation: Augmentation | None,
        center_crop: bool,
        seed: int = 0,
    ) -> None:
        self.episodes = list(episodes)
        self.processor = processor
        self.prompts = prompts
        self.normalizer = normalizer
        self.chunk_len = chunk_len
        self.augmentation = augmentation
        self.center_crop = center_crop
        self.seed = seed
        self.epoch = 0
        self.index = [(e, t) for e, episode in enumerate(self.episodes) for t in range(len(episode))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        e, t = self.index[i]
        episode = self.episodes[e]
        images = [np.asarray(frames[t]) for frames in episode.images]
        if self.augmentation is not None:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            images = [self.augmentation(image, rng) for image in images]
        pixels = self.processor(images, crop=self.augmentation is None and self.center_crop)
        proprio = None if episode.states is None else torch.from_numpy(self.normalizer.normalize_proprio(episode.states[t]))
        target = normalize_actions(self.normalizer, action_chunk(episode.actions, t, self.chunk_len))
        return {"pixel_values": pixels, "ids": self.prompts(episode.instruction), "proprio": proprio,
                "actions": torch.from_numpy(target)}


def collate(samples: list[dict], pad_token_id: int) -> Batch:
    ids, lengths = pad_prompts([s["ids"] for s in samples], pad_token_id)
    proprio = None if samples[0]["proprio"] is None else torch.stack([s["proprio"] for s in samples])
    return Batch(
        pixel_values=torch.stack([s["pixel_values"] for s in samples]),
        text_ids=ids,
        text_lengths=lengths,
        proprio=proprio,
        actions=torch.stack([s["actions"] for s in samples]),
    )


class EpochSampler(Sampler[int]):
    """A fresh permutation per epoch from (seed, epoch); with several processes each takes every world-th index.

    ``start`` skips samples already consumed when resuming in the middle of an epoch.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.size, self.seed, self.rank, self.world = size, seed, rank, world
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world)) - self.start

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        return iter(order[self.rank :: self.world][self.start :].tolist())

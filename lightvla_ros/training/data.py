"""Demonstrations as episodes, their validation, and the action-chunk targets the model is trained on.

Every reader (rosbag2, LeRobot, the toy task) produces :class:`Episode` objects; everything after that is
format-independent. Problems are collected for all episodes first and reported together (with the episode and
frame they concern) before any training starts, so bad data fails in seconds, not hours into a run.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from lightvla_ros.model.errors import LightVLAError

MAX_LISTED_PROBLEMS = 30


class DataError(LightVLAError):
    """The training data cannot be used; the message is the full report."""


class EncodedFrames(Sequence[np.ndarray]):
    """Camera frames kept compressed (PNG/JPEG bytes, or image files) and decoded on access.

    Keeps large datasets in memory at a fraction of their decoded size.
    """

    def __init__(self, frames: Sequence[bytes | Path]) -> None:
        self._frames = list(frames)

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return EncodedFrames(self._frames[index])
        frame = self._frames[index]
        source = io.BytesIO(frame) if isinstance(frame, (bytes, bytearray, memoryview)) else frame
        with Image.open(source) as image:
            return np.asarray(image.convert("RGB"))

    @staticmethod
    def encode(image: np.ndarray) -> bytes:
        """Lossless PNG bytes of an RGB uint8 image (fast, low compression)."""
        buffer = io.BytesIO()
        Image.fromarray(image, "RGB").save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()


@dataclass
class Episode:
    """One demonstration: per-frame camera images, robot state and commanded action, under one instruction.

    ``images`` holds one frame sequence per camera (third-person first), each as long as ``actions``; any
    sequence of HxWx3 uint8 arrays works (an array, :class:`EncodedFrames`).
    """

    instruction: str
    images: list[Sequence[np.ndarray]]
    states: np.ndarray | None  # (T, state_dim) float32
    actions: np.ndarray  # (T, action_dim) float32
    name: str

    def __len__(self) -> int:
        return int(self.actions.shape[0])


@dataclass
class DataReport:
    """Problems found while reading and checking data. Errors make an episode unusable; warnings do not."""

    source: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    bad_episodes: set[str] = field(default_factory=set)
    mapping: list[str] = field(default_factory=list)  # which feature or topic became what, and why

    def chose(self, line: str) -> None:
        """Record one choice of the feature/topic mapping (always shown, so a wrong guess is seen at once)."""
        self.mapping.append(line)

    def error(self, episode: str, message: str) -> None:
        self.errors.append(f"{episode}: {message}")
        self.bad_episodes.add(episode)

    def warn(self, where: str, message: str) -> None:
        self.warnings.append(f"{where}: {message}")

    def text(self, episodes: int, frames: int) -> str:
        lines = [f"data report for {self.source}: {episodes} usable episode(s), {frames} frame(s); "
                 f"{len(self.bad_episodes)} bad episode(s), {len(self.errors)} error(s), {len(self.warnings)} warning(s)"]
        if self.mapping:
            lines.append("  mapping (change it with --data-config; `lightvla train --example-data-config` shows how):")
            lines += [f"    {line}" for line in self.mapping]
        for title, items in (("errors", self.errors), ("warnings", self.warnings)):
            if items:
                lines.append(f"  {title}:")
                lines += [f"    - {item}" for item in items[:MAX_LISTED_PROBLEMS]]
                if len(items) > MAX_LISTED_PROBLEMS:
                    lines.append(f"    ... and {len(items) - MAX_LISTED_PROBLEMS} more")
        return "\n".join(lines)


def camera_roles(count: int) -> list[str]:
    """What each model image is: one camera, third-person + wrist (the LIBERO layout), or numbered."""
    if count == 1:
        return ["camera"]
    if count == 2:
        return ["third-person camera", "wrist camera"]
    return [f"camera {i}" for i in range(count)]


def check_episodes(
    episodes: list[Episode],
    report: DataReport,
    *,
    num_images: int,
    state_dim: int | None,
    action_dim: int,
    skip_bad: bool,
) -> list[Episode]:
    """Validate episodes against the model and each other; return the usable ones or raise :class:`DataError`.

    Checks: empty episodes, missing instruction, camera count and frame counts, image shape/dtype (first and
    last frame), state/action dimensions and NaN/inf values. With ``skip_bad`` bad episodes are dropped
    (listed in the report) instead of stopping the run.
    """
    for episode in episodes:
        name = episode.name
        if len(episode) == 0:
            report.error(name, "empty episode (no frames)")
            continue
        if not episode.instruction.strip():
            report.error(name, "no instruction")
        if len(episode.images) != num_images:
            report.error(name, f"{len(episode.images)} camera stream(s), the model takes {num_images}")
        for camera, frames in enumerate(episode.images):
            if len(frames) != len(episode):
                report.error(name, f"camera {camera} has {len(frames)} frames for {len(episode)} actions")
                continue
            for t in {0, len(frames) - 1}:
                frame = np.asarray(frames[t])
                if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8 or min(frame.shape[:2]) == 0:
                    report.error(name, f"camera {camera} frame {t} is {frame.dtype} {frame.shape}, expected HxWx3 uint8")
                    break
        _check_array(report, name, "action", episode.actions, action_dim)
        if state_dim is not None:
            if episode.states is None:
                report.error(name, f"no robot state, the model takes a {state_dim}-d state")
            else:
                _check_array(report, name, "state", episode.states, state_dim, len(episode))
    good = [e for e in episodes if e.name not in report.bad_episodes]
    frames = sum(len(e) for e in good)
    if not good:
        raise DataError(report.text(0, 0) + "\nno usable episodes: fix the data, or the mapping of topics/features to the "
                                            "model's inputs (--data-config)")
    if report.errors and not skip_bad:
        raise DataError(report.text(len(good), frames) + "\n(fix the data, or pass --skip-bad-episodes to train on the rest)")
    return good


def _check_array(report: DataReport, name: str, what: str, values: np.ndarray, dim: int, length: int | None = None) -> None:
    if values.ndim != 2 or values.shape[1] != dim:
        report.error(name, f"{what} has shape {values.shape}, the model needs {dim} values per frame")
        return
    if length is not None and values.shape[0] != length:
        report.error(name, f"{values.shape[0]} {what} rows for {length} frames")
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if bad.size:
        report.error(name, f"{what} has NaN/inf at frame(s) {bad[:5].tolist()}{' ...' if bad.size > 5 else ''}")


def action_chunk(actions: np.ndarray, t: int, chunk_len: int) -> np.ndarray:
    """``actions[t : t + chunk_len]``, padded past the episode end by repeating the last action (as the reference)."""
    index = np.minimum(np.arange(t, t + chunk_len), len(actions) - 1)
    return actions[index]


def read_dataset(path: str | Path, *, data_config: str | Path | None, image_size: int | None, report: DataReport,
                 num_images: int | None = None) -> list[Episode]:
    """Episodes from a rosbag2 recording (a bag folder, or a folder of bags) or a LeRobot dataset folder.

    ``data_config`` is a YAML file (``lightvla train --example-data-config`` prints both forms): for bags the topic
    mapping, for LeRobot optional ``cameras`` (feature names, third-person first), ``state`` and ``action``
    features. ``num_images`` is how many cameras the model takes (None: every camera of the data).
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"data path {root} does not exist")
    if (root / "meta" / "info.json").is_file():
        import yaml

        from lightvla_ros.training.lerobot import LeRobotConfig, read_lerobot

        mapping = yaml.safe_load(Path(data_config).read_text()) if data_config else None
        return read_lerobot(root, image_size=image_size, report=report, config=LeRobotConfig.from_mapping(mapping, data_config),
                            num_images=num_images)
    from lightvla_ros.training.rosbag import find_bags, read_rosbags

    bags = find_bags(root)
    if bags:
        return read_rosbags(bags, data_config, image_size=image_size, report=report)
    raise DataError(f"{root} is neither a LeRobot dataset (meta/info.json) nor a rosbag2 recording (metadata.yaml, or "
                    "sub-folders with one)")

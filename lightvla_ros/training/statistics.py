"""``dataset_statistics.json`` computed from the training data, and the action normalisation it implies.

Same layout and conventions as the released checkpoints (docs/model-notes.md §9): q01/q99 bounds (``BOUNDS_Q99``), an action
mask that leaves the gripper dimension(s) un-normalised, mean/std/min/max for reference, and the number of
transitions and trajectories.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from lightvla_ros.model.processing import Normalizer
from lightvla_ros.training.data import Episode


def _summary(values: np.ndarray) -> dict[str, list[float]]:
    values = values.astype(np.float64)
    return {
        "mean": values.mean(0).tolist(),
        "std": values.std(0).tolist(),
        "max": values.max(0).tolist(),
        "min": values.min(0).tolist(),
        "q01": np.quantile(values, 0.01, axis=0).tolist(),
        "q99": np.quantile(values, 0.99, axis=0).tolist(),
    }


def compute_statistics(episodes: Sequence[Episode], key: str, action_mask: Sequence[bool]) -> dict[str, Any]:
    """``{key: {"action": {..., "mask"}, "proprio": {...}, "num_transitions", "num_trajectories"}}``."""
    actions = np.concatenate([e.actions for e in episodes])
    if len(action_mask) != actions.shape[1]:
        raise ValueError(f"action mask has {len(action_mask)} entries for {actions.shape[1]}-d actions")
    entry: dict[str, Any] = {"action": {**_summary(actions), "mask": [bool(m) for m in action_mask]}}
    if all(e.states is not None for e in episodes):
        entry["proprio"] = _summary(np.concatenate([e.states for e in episodes]))
    entry["num_transitions"] = int(actions.shape[0])
    entry["num_trajectories"] = len(episodes)
    return {key: entry}


def default_action_mask(action_dim: int, gripper_dims: Sequence[int]) -> list[bool]:
    """True (normalise) everywhere except the gripper dimensions; negative indices count from the end."""
    mask = [True] * action_dim
    for dim in gripper_dims:
        if not -action_dim <= dim < action_dim:
            raise ValueError(f"gripper dimension {dim} is out of range for {action_dim}-d actions")
        mask[dim] = False
    return mask


def normalize_actions(normalizer: Normalizer, actions: np.ndarray) -> np.ndarray:
    """The inverse of ``Normalizer.unnormalize_actions``: q01/q99 to [-1, 1] with clipping on masked dimensions.

    Dimensions whose q01 equals q99 (constant in the data) become 0; un-masked dimensions (the gripper) pass through.
    """
    low, high = normalizer.action_low, normalizer.action_high
    span = high - low
    scaled = np.clip(2.0 * (actions - low) / (span + 1e-8) - 1.0, -1.0, 1.0)
    scaled = np.where(span == 0, 0.0, scaled)
    return np.where(normalizer.action_mask, scaled, actions).astype(np.float32)

"""Robot state (the proprio vector) from JointState or Float32MultiArray messages."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


class StateError(ValueError):
    """A state message that cannot be used as the proprio vector; the text says why."""


def state_from_joint_state(names: Sequence[str], positions: Sequence[float],
                           wanted: Sequence[str]) -> np.ndarray:
    """Positions ordered as ``wanted`` (all of them, in message order, when it is empty)."""
    positions = list(positions)
    if len(names) != len(positions):
        raise StateError(f'JointState has {len(names)} names but {len(positions)} positions')
    if not wanted:
        return np.asarray(positions, dtype=np.float32)
    index = {name: i for i, name in enumerate(names)}
    missing = [name for name in wanted if name not in index]
    if missing:
        raise StateError(f'JointState lacks joint(s) {missing} listed in state_joint_names')
    return np.asarray([positions[index[name]] for name in wanted], dtype=np.float32)


def state_from_array(data: Sequence[float], indices: Sequence[int]) -> np.ndarray:
    """The selected elements of a flat array (all of them when ``indices`` is empty)."""
    values = np.asarray(data, dtype=np.float32).reshape(-1)
    if not indices:
        return values
    bad = [i for i in indices if not 0 <= i < values.size]
    if bad:
        raise StateError(f'state_indices {bad} out of range for an array of {values.size} values')
    return values[list(indices)]


def check_state(vector: np.ndarray, expected_dim: int | None) -> None:
    """Raise StateError unless the vector has the model's length and only finite values."""
    if expected_dim is not None and vector.size != expected_dim:
        raise StateError(f'state has {vector.size} values but the model expects {expected_dim}')
    if not np.all(np.isfinite(vector)):
        raise StateError('state contains NaN or infinite values')


@dataclass(frozen=True)
class StateSample:
    """The latest valid state and when it was measured (node-clock seconds)."""

    vector: np.ndarray
    stamp: float

    def lag_behind(self, obs_stamp: float, tolerance: float) -> float:
        """How much older (s) this state is than an observation's oldest frame, when by more than ``tolerance``,
        else 0.0. A robot publishes the state and frames of one instant together and they may arrive in either
        order, so a state that old was measured before the frames and theirs is still on its way."""
        lag = obs_stamp - self.stamp
        return lag if lag > tolerance else 0.0


class StateStore:
    """Thread-safe holder of the latest valid state and of the last rejection."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sample: StateSample | None = None
        self.received = 0
        self.rejected = 0
        self.last_error = ''
        self.last_error_at: float | None = None
        self.names: tuple[str, ...] = ()
        self.raw_positions: tuple[float, ...] = ()

    def put(self, vector: np.ndarray, stamp: float, expected_dim: int | None) -> None:
        """Store a state after validating it; invalid states replace nothing and are counted."""
        with self._lock:
            self.received += 1
        check_state(vector, expected_dim)
        with self._lock:
            self._sample = StateSample(vector.astype(np.float32), stamp)

    def record_error(self, reason: str, now: float) -> None:
        """Count a rejected state message and clear the stored one (it no longer holds)."""
        with self._lock:
            self.rejected += 1
            self.last_error = reason
            self.last_error_at = now
            self._sample = None

    def remember_joints(self, names: Any, positions: Any) -> None:
        """Keep the raw joint positions, used to hold the arm in place on stop."""
        with self._lock:
            self.names = tuple(names)
            self.raw_positions = tuple(float(p) for p in positions)

    def measured_joints(self, names: Sequence[str]) -> list[float] | None:
        """The last measured positions of ``names`` in that order, or None when any of them is unknown."""
        with self._lock:
            index = {name: i for i, name in enumerate(self.names)}
            if not names or not all(name in index for name in names):
                return None
            return [self.raw_positions[index[name]] for name in names]

    def latest(self) -> StateSample | None:
        """The latest valid state, or None."""
        with self._lock:
            return self._sample

    def fresh(self, now: float, max_age: float) -> StateSample | None:
        """The latest valid state unless it is older than ``max_age`` (then it counts as missing)."""
        sample = self.latest()
        return sample if sample is not None and now - sample.stamp <= max_age else None

"""Action-chunk arithmetic: safety guards, trimming, velocities, array layout and EEF integration.

Timing convention: step ``k`` of a chunk belongs to the interval ``[k * dt, (k + 1) * dt)`` after the
observation. When the chunk is ready at ``now`` the steps whose interval has ended are trimmed (the robot
lived through them while the model was running, executing the previous chunk); the step in progress is
still executed. A chunk of ``n`` steps is stale once ``n * dt`` have passed since its observation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClipResult:
    """Clipped actions and how many elements had to be changed."""

    actions: np.ndarray
    clipped_elements: int


def all_finite(actions: np.ndarray) -> bool:
    """True when every element is finite; a chunk that fails this is never published."""
    return bool(np.all(np.isfinite(actions)))


def validate_limits(lower: list[float], upper: list[float], action_dim: int) -> str:
    """Return an error sentence when the configured limits do not fit the model, else ''."""
    if len(lower) != len(upper):
        return (f'action_lower has {len(lower)} values but action_upper has {len(upper)}; '
                'give both with one value per action dimension, or leave both empty')
    if lower and len(lower) != action_dim:
        return (f'action limits have {len(lower)} values but the model outputs {action_dim} '
                'action dimensions')
    bad = [i for i, (lo, hi) in enumerate(zip(lower, upper)) if not lo <= hi]
    if bad:
        return f'action_lower > action_upper (or NaN) in dimension(s) {bad}'
    return ''


def clip_actions(actions: np.ndarray, lower: list[float], upper: list[float]) -> ClipResult:
    """Clip each action dimension to ``[lower[i], upper[i]]``; empty limits mean no clipping."""
    if not lower:
        return ClipResult(actions.astype(np.float32, copy=True), 0)
    lo = np.asarray(lower, dtype=np.float32)
    hi = np.asarray(upper, dtype=np.float32)
    clipped = np.clip(actions, lo, hi).astype(np.float32)
    return ClipResult(clipped, int(np.count_nonzero(clipped != actions)))


def elapsed_steps(obs_time: float, now: float, dt: float) -> int:
    """Number of chunk steps whose interval ended between the observation and ``now``."""
    if dt <= 0:
        raise ValueError('dt must be positive')
    elapsed = max(0.0, now - obs_time)
    return int(math.floor(elapsed / dt + 1e-9))


def fill_velocities(positions: np.ndarray, dt: float) -> np.ndarray:
    """Finite-difference velocities for trajectory points spaced ``dt`` apart, ending at rest.

    Interior points use central differences, the first a forward difference, and the last point is
    zero so a controller that receives no further chunk stops at the final position.
    """
    n = positions.shape[0]
    vel = np.zeros_like(positions, dtype=np.float64)
    if n >= 2:
        vel[0] = (positions[1] - positions[0]) / dt
    if n >= 3:
        vel[1:-1] = (positions[2:] - positions[:-2]) / (2.0 * dt)
    if n >= 1:
        vel[-1] = 0.0
    return vel


def multiarray_layout(shape: tuple[int, ...],
                      labels: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """``(label, size, stride)`` triples of a row-major ``std_msgs/MultiArrayLayout``."""
    if len(shape) != len(labels):
        raise ValueError('one label per dimension is required')
    dims = []
    for i, (label, size) in enumerate(zip(labels, shape)):
        stride = int(np.prod(shape[i:], dtype=np.int64))
        dims.append((label, int(size), stride))
    return dims


def multiarray_index(layout: list[tuple[str, int, int]], index: tuple[int, ...],
                     data_offset: int = 0) -> int:
    """Flat index of ``index`` in a layout, as the MultiArrayLayout documentation defines it."""
    flat = data_offset
    for i, (_, size, _) in enumerate(layout):
        if not 0 <= index[i] < size:
            raise IndexError(index)
        inner = layout[i + 1][2] if i + 1 < len(layout) else 1
        flat += index[i] * inner
    return flat


def rotvec_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rotation matrix of a rotation vector (axis times angle, radians)."""
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.eye(3)
    axis = np.asarray(rotvec, dtype=np.float64) / angle
    x, y, z = axis
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * (k @ k)


def matrix_to_quaternion(rot: np.ndarray) -> tuple[float, float, float, float]:
    """Unit quaternion ``(x, y, z, w)`` of a rotation matrix."""
    m = rot
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        w, x = 0.25 * s, (m[2, 1] - m[1, 2]) / s
        y, z = (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        w, x = (m[2, 1] - m[1, 2]) / s, 0.25 * s
        y, z = (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        w, x = (m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s
        y, z = 0.25 * s, (m[1, 2] + m[2, 1]) / s
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        w, x = (m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s
        y, z = (m[1, 2] + m[2, 1]) / s, 0.25 * s
    norm = math.sqrt(w * w + x * x + y * y + z * z)
    return (x / norm, y / norm, z / norm, w / norm)


def integrate_eef_deltas(deltas: np.ndarray, linear_scale: float,
                         angular_scale: float) -> list[tuple[np.ndarray, tuple[float, ...]]]:
    """Poses reached by applying EEF deltas one after another, starting at the identity pose.

    ``deltas`` is (n, >=6): translation then rotation vector, in the base frame (robosuite's OSC
    convention, which LIBERO uses); the scales convert normalised model units to metres and
    radians.
    Returns the start pose followed by one pose per step.
    """
    pos = np.zeros(3)
    rot = np.eye(3)
    poses = [(pos.copy(), matrix_to_quaternion(rot))]
    for row in np.asarray(deltas, dtype=np.float64):
        pos = pos + row[:3] * linear_scale
        rot = rotvec_to_matrix(row[3:6] * angular_scale) @ rot
        poses.append((pos.copy(), matrix_to_quaternion(rot)))
    return poses


def delta_to_twist(delta: np.ndarray, linear_scale: float, angular_scale: float,
                   dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear (m/s) and angular (rad/s) velocity that performs one EEF delta step in ``dt``."""
    d = np.asarray(delta, dtype=np.float64)
    return d[:3] * linear_scale / dt, d[3:6] * angular_scale / dt

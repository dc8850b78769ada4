"""The authors' LIBERO evaluation protocol (OpenVLA-OFT's ``run_libero_eval``, which LightVLA reuses), without LIBERO.

Everything an episode needs besides the simulator itself: each suite's step budget, the settle steps, how an
observation becomes the policy's inputs (both cameras rotated 180 degrees, the 8-d state) and how a model action
becomes an env command (the gripper). It lives apart from the simulator wrapper so that it is tested without LIBERO.
What the policy then does to the rotated frames (JPEG, Lanczos resize, centre crop) is the policy's ``oft``
preprocessing, not part of this protocol.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from lightvla_ros.model.errors import InputError
from lightvla_ros.ros.core.scheduler import ChunkScheduler, SchedulerSettings

SETTLE_STEPS = 10  # no-op steps after each reset so that the objects come to rest; the policy does not see them
ENV_IMAGE_SIZE = 256  # camera resolution the evaluation renders at
ENV_SEED = 0  # the authors seed every env with 0: it moves objects even with a fixed initial state
TRIALS_PER_TASK = 50
NOOP_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # no motion, gripper open (the env opens on -1)
CONTROL_PERIOD = 0.05  # s per env step: LIBERO controls at 20 Hz
# robosuite's OSC_POSE controller maps a command of +-1 to +-0.05 m and +-0.5 rad per step
OSC_LINEAR_SCALE = 0.05
OSC_ANGULAR_SCALE = 0.5
CAMERA_KEYS = ("agentview_image", "robot0_eye_in_hand_image")  # the policy's order: third-person, then wrist


@dataclass(frozen=True)
class Suite:
    name: str
    max_steps: int  # policy steps after the settle steps: the longest training demonstration plus a margin


SUITES = {suite.name: suite for suite in (
    Suite("libero_spatial", 220),
    Suite("libero_object", 280),
    Suite("libero_goal", 300),
    Suite("libero_10", 520),
    Suite("libero_90", 400),
)}


def suite(name: str) -> Suite:
    if name not in SUITES:
        raise InputError(f"unknown LIBERO suite {name!r}; use one of {', '.join(SUITES)}")
    return SUITES[name]


def unnorm_key(suite_name: str, available: Iterable[str]) -> str:
    """The statistics key for a suite, as the authors pick it: the suite's name, else ``<name>_no_noops`` (the key
    the released checkpoints carry, after the datasets with the no-op steps removed)."""
    keys = set(available)
    for key in (suite_name, f"{suite_name}_no_noops"):
        if key in keys:
            return key
    raise InputError(f"the checkpoint has no statistics for {suite_name!r} (nor {suite_name}_no_noops); "
                     f"it has: {', '.join(sorted(keys))}")


def quat2axisangle(quat: Sequence[float]) -> np.ndarray:
    """Quaternion (x, y, z, w) -> axis-angle (the unit axis scaled by the angle, in radians), as robosuite's
    ``transform_utils.quat2axisangle`` computes it: ``w`` clipped to [-1, 1], zero for a (near-)zero rotation,
    and no folding of angles above pi. Unlike robosuite's, it leaves its argument alone."""
    x, y, z, w = (float(v) for v in quat)
    w = min(max(w, -1.0), 1.0)
    den = math.sqrt(1.0 - w * w)
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return np.array([x, y, z]) * 2.0 * math.acos(w) / den


def robot_state(obs: Mapping[str, Any]) -> np.ndarray:
    """The 8-d proprio state: end-effector position (3), its orientation as axis-angle (3), gripper joints (2)."""
    return np.concatenate([np.asarray(obs["robot0_eef_pos"], dtype=np.float64).reshape(3),
                           quat2axisangle(obs["robot0_eef_quat"]),
                           np.asarray(obs["robot0_gripper_qpos"], dtype=np.float64).reshape(2)])


def camera_frames(obs: Mapping[str, Any]) -> list[np.ndarray]:
    """Both camera images rotated 180 degrees, the orientation the training data has (LIBERO renders them upside
    down), as contiguous copies the simulator cannot overwrite."""
    return [np.ascontiguousarray(np.asarray(obs[key])[::-1, ::-1]) for key in CAMERA_KEYS]


def env_action(action: np.ndarray) -> np.ndarray:
    """Model action(s) (..., 7) -> env command(s): motion passes through; the gripper, 1 = open and 0 = closed in
    the model's convention, becomes ``-sign(2g - 1)``, i.e. -1 = open and +1 = close as the env wants (exactly 0.5
    gives 0, as in the authors' code). The input is not modified."""
    command = np.array(action, dtype=np.float64)
    command[..., -1] = -np.sign(2.0 * command[..., -1] - 1.0)
    return command


def twist_command(linear: Sequence[float], angular: Sequence[float], gripper: float, dt: float = CONTROL_PERIOD) -> np.ndarray:
    """What a robot driver makes of an end-effector twist (m/s, rad/s) held for ``dt`` and a model gripper value:
    the env command (7,), motion clipped to the controller's +-1, the gripper as :func:`env_action` maps it."""
    motion = np.concatenate([np.asarray(linear, dtype=np.float64) * dt / OSC_LINEAR_SCALE,
                             np.asarray(angular, dtype=np.float64) * dt / OSC_ANGULAR_SCALE])
    return env_action(np.append(np.clip(motion, -1.0, 1.0), float(gripper)))


@dataclass(frozen=True)
class EpisodeResult:
    success: bool
    steps: int  # policy steps executed (settle steps not counted)
    queries: int  # policy calls


def start_episode(env: Any, initial_state: Any) -> Any:
    """Reset, the initial state, then the ``SETTLE_STEPS`` no-op steps; returns the first observation the policy sees.
    ``reset`` must come first or the previous episode's controller state leaks into this one."""
    env.reset()
    obs = env.set_init_state(initial_state)
    for _ in range(SETTLE_STEPS):
        obs, _, _, _ = env.step(list(NOOP_ACTION))
    return obs


def run_episode(env: Any, initial_state: Any, act: Callable[[list[np.ndarray], np.ndarray], np.ndarray], max_steps: int,
                on_frame: Callable[[np.ndarray], None] | None = None, execution_mode: str = "open_loop",
                dt: float = CONTROL_PERIOD) -> EpisodeResult:
    """One episode as the authors run it: reset, set the initial state, ``SETTLE_STEPS`` no-op steps, then up to
    ``max_steps`` policy steps. ``act(frames, state)`` returns a chunk of model actions (T, 7). Success is the env
    reporting done. ``on_frame`` sees the rotated third-person frame of every policy step (for the video).

    ``execution_mode`` says how chunks follow each other (the node's modes, :mod:`lightvla_ros.ros.core.scheduler`);
    ``open_loop``, the authors' choice, executes each whole chunk before the next query. The simulator stands still
    while the policy runs, so the modes are compared without latency: step ``k`` happens at ``k * dt``.

    ``env`` needs LIBERO's ``reset()``, ``set_init_state(state) -> obs`` and ``step(list) -> (obs, reward, done,
    info)``.
    """
    scheduler = ChunkScheduler(SchedulerSettings(dt=dt, mode=execution_mode))
    obs = start_episode(env, initial_state)
    queries = 0
    for step in range(1, max_steps + 1):
        now = step * dt
        frames = camera_frames(obs)
        if on_frame is not None:
            on_frame(frames[0])
        if scheduler.wants_inference():
            chunk = np.asarray(act(frames, robot_state(obs)), dtype=np.float64)
            if chunk.ndim != 2 or chunk.shape[0] == 0 or chunk.shape[1] != len(NOOP_ACTION):
                raise InputError(f"the policy returned actions of shape {chunk.shape}; LIBERO needs a chunk (T >= 1, 7)")
            scheduler.merge(chunk, now, now)
            queries += 1
        obs, _, done, _ = env.step(env_action(scheduler.tick(now).row).tolist())
        if done:
            return EpisodeResult(True, step, queries)
    return EpisodeResult(False, max_steps, queries)


def run_streamed_episode(env: Any, initial_state: Any, command: Callable[[list[np.ndarray], np.ndarray], np.ndarray],
                         max_steps: int, on_frame: Callable[[np.ndarray], None] | None = None) -> EpisodeResult:
    """The episode with a robot driver in the loop instead of chunks: reset, initial state and settle steps as in
    :func:`run_episode`, then at every step ``command(frames, state)`` gives the env command (7,) the driver holds
    for this step (the policy runs elsewhere, at its own pace). ``queries`` is 0: the driver does not know them."""
    obs = start_episode(env, initial_state)
    for step in range(1, max_steps + 1):
        frames = camera_frames(obs)
        if on_frame is not None:
            on_frame(frames[0])
        obs, _, done, _ = env.step(np.asarray(command(frames, robot_state(obs)), dtype=np.float64).tolist())
        if done:
            return EpisodeResult(True, step, 0)
    return EpisodeResult(False, max_steps, 0)

"""The node's input stage: camera frames and robot state as they arrive, and the observation the model gets.

Callbacks only store the newest message (see :mod:`.core.frames`, :mod:`.core.state`); the inference worker asks for a
decoded, matched observation. Every refusal is counted and named for the diagnostics and logged, throttled.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from sensor_msgs.msg import JointState

from lightvla_ros.contract import Policy
from lightvla_ros.ros import messages
from lightvla_ros.ros.core.frames import FrameSet
from lightvla_ros.ros.core.images import ImageDecodeError, decode_image
from lightvla_ros.ros.core.params import NodeConfig
from lightvla_ros.ros.core.state import StateError, state_from_array, state_from_joint_state
from lightvla_ros.ros.diagnostics import NodeHealth

# The state a model takes (proprio_dim), None when there is no model or it takes none.
ExpectedStateFn = Callable[[], int | None]


class ObservationInputs:
    """Stores incoming frames and states; assembles images and proprio for one inference."""

    def __init__(self, health: Callable[[], NodeHealth], config: Callable[[], NodeConfig], now: Callable[[], float],
                 expected_state: ExpectedStateFn, wake: Callable[[], None], logger: Any) -> None:
        self._health = health
        self._config = config
        self._now = now
        self._expected_state = expected_state
        self._wake = wake  # the inference worker: a frame or state may be what it waits for
        self._log = logger

    def on_image(self, index: int, msg: Any) -> None:
        self._health().frames.put(index, msg, messages.stamp_seconds(msg.header.stamp), self._now(),
                                  self._config().max_image_age)
        self._wake()

    def on_state(self, msg: Any) -> None:
        now, cfg, store = self._now(), self._config(), self._health().state
        try:
            if isinstance(msg, JointState):
                store.remember_joints(msg.name, msg.position)
                vector = state_from_joint_state(msg.name, msg.position, cfg.state_joint_names)
                stamp = messages.stamp_seconds(msg.header.stamp) or now
            else:
                vector, stamp = state_from_array(msg.data, cfg.state_indices), now
            store.put(vector, stamp, self._expected_state())
        except StateError as exc:
            store.record_error(str(exc), now)
            self._log.warning(f'state rejected: {exc}', throttle_duration_sec=5.0)
        self._wake()

    def decode(self, frameset: FrameSet, now: float) -> list[np.ndarray] | None:
        """RGB images of a matched frame set, or None (counted and reported) when one cannot be decoded."""
        cfg, images = self._config(), []
        for i, frame in enumerate(frameset.frames):
            try:
                images.append(decode_image(frame.msg, cfg.camera_kinds[i] == 'compressed'))
            except ImageDecodeError as exc:
                self._health().frames.record_error(i, str(exc), now)
                self._log.warning(f'frame from {cfg.camera_topics[i]} rejected: {exc}', throttle_duration_sec=5.0)
                return None
        return images

    def proprio(self, policy: Policy, frameset: FrameSet, now: float) -> np.ndarray | None | bool:
        """The state vector for the frames, None when the model takes none, False when inference must wait for one.

        No valid state younger than max_state_age: zeros or wait (missing_state). One older than the frames by more
        than sync_tolerance: wait for the state of their instant. While waiting the frames are put back.
        """
        if not policy.use_proprio:
            return None
        cfg, health = self._config(), self._health()
        sample = health.state.fresh(now, cfg.max_state_age)
        if sample is None:
            if cfg.missing_state == 'zeros':
                return np.zeros(int(policy.proprio_dim), dtype=np.float32)
            health.waiting = f'a valid state on {cfg.state_topic}'
        elif lag := sample.lag_behind(frameset.obs_stamp, cfg.sync_tolerance):
            health.waiting = f'a state as new as the frames on {cfg.state_topic} (state {lag:.3f} s older)'
        else:
            return sample.vector
        health.frames.restore(frameset)
        return False

"""A LIBERO stand-in with LiberoTask's interface: deterministic, fast, rendering frames that depend on the state, so the
closed loop (evaluation, simulator node, both backends) is tested without the simulator; and the gate of the tests that
need the real one."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pytest

# libero_spatial task 0, init state 0, after reset and the settle steps (measured in the simulator, issue 11)
GOLDEN_STATE = np.array([-0.211242, -0.011091, 1.174250, 3.140895, -0.002848, -0.087739, 0.038723, -0.038722])


class FakeLiberoTask:
    """The end effector moves by 0.05 m per unit of command (LIBERO's OSC scale); the task succeeds once it has gone
    ``goal_dx`` metres along +x. Frames (64x64, upside down as LIBERO renders them) draw the effector's position."""

    def __init__(self, suite: str = "libero_spatial", task_id: int = 0, goal_dx: float = 0.2, size: int = 64) -> None:
        self.suite, self.task_id = suite, task_id
        self.name = f"fake task {task_id}"
        self.instruction = "push the cube to the right"
        self.initial_states = np.linspace(0.0, 0.1, 5)
        self.goal_dx = goal_dx
        self.size = size
        self.calls: list[str] = []
        self.commands: list[list[float]] = []
        self.closed = False
        self._pos = np.zeros(3)
        self._start_x = 0.0
        self._gripper = 0.04

    def initial_state(self, episode: int) -> float:
        return float(self.initial_states[episode % len(self.initial_states)])

    def reset(self) -> None:
        self.calls.append("reset")

    def set_init_state(self, state: float) -> dict:
        self.calls.append(f"set_init_state {state}")
        self._pos = np.array([state, 0.0, 1.0])
        self._start_x = float(state)
        self._gripper = 0.04
        return self._obs()

    def step(self, command: Sequence[float]) -> tuple[dict, float, bool, dict]:
        self.commands.append(list(command))
        self._pos = self._pos + 0.05 * np.clip(np.asarray(command[:3], dtype=np.float64), -1.0, 1.0)
        self._gripper = 0.0 if command[6] > 0 else 0.04
        done = self._pos[0] - self._start_x >= self.goal_dx - 1e-9
        return self._obs(), float(done), bool(done), {}

    def close(self) -> None:
        self.closed = True

    def _obs(self) -> dict:
        image = np.zeros((self.size, self.size, 3), np.uint8)
        column = int(np.clip(self.size / 2 + self._pos[0] * 40, 0, self.size - 1))
        row = int(np.clip(self.size / 2 + self._pos[1] * 40, 0, self.size - 1))
        image[row, :, 1] = 120
        image[:, column, 0] = 255
        image[-4:, -4:] = 255  # LIBERO renders upside down: this corner becomes the top left once rotated
        wrist = image[::-1].copy()
        return {"agentview_image": image, "robot0_eye_in_hand_image": wrist, "robot0_eef_pos": self._pos.copy(),
                "robot0_eef_quat": np.array([0.0, 0.0, 0.0, 1.0]),
                "robot0_gripper_qpos": np.array([self._gripper, -self._gripper])}


def require_libero() -> None:
    """Skip the calling test or fixture when LIBERO cannot be imported; where LIGHTVLA_REQUIRE_LIBERO=1 (CI, whose
    environment installs it) fail it instead, so a broken install cannot pass as a row of skips."""
    from lightvla_ros.sim.libero_env import libero_available

    reason = libero_available()
    if not reason:
        return
    if os.environ.get("LIGHTVLA_REQUIRE_LIBERO") == "1":
        pytest.fail(f"LIGHTVLA_REQUIRE_LIBERO=1, but {reason}", pytrace=False)
    pytest.skip(reason)

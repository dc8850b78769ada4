"""A planar reacher whose target wanders, with imperfect actuation: a task where feedback matters.

The arena is the unit square seen from above. The gripper is velocity-controlled: every control period ``DT`` the
robot executes the commanded planar velocity, but through a per-episode actuation error (the command is rotated by
up to ``BIAS_ANGLE`` and scaled by up to ``1 +- BIAS_GAIN``, as an uncalibrated arm would) plus white noise, so a
plan executed blind drifts. The target (a red disc) moves at ``TARGET_SPEED`` with a heading that random-walks and
bounces off the walls, so a plan made from an old observation aims at where the target was.

Success: the gripper stays within ``SUCCESS_RADIUS`` of the target for ``HOLD_STEPS`` consecutive periods before
the time limit. The expert steers proportionally towards the target's current position (it covers ``GAIN x DT`` of
the distance per period, at most ``MAX_SPEED``), which is all a policy that sees one frame can learn.

ROS-free; :mod:`experiments.chunk_execution.sim_node` puts it on topics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

DT = 0.1  # s, the control period (10 Hz)
IMAGE_SIZE = 64  # the toy LightVLA model's input size
MAX_SPEED = 0.4  # arena units per second; one unit of the action's translation is MAX_SPEED * DT
LINEAR_SCALE = MAX_SPEED * DT  # lightvla_node's linear_scale: arena units per unit of EEF delta
GAIN = 2.0  # 1/s: the expert's proportional gain
TARGET_SPEED = 0.08  # arena units per second
TARGET_TURN = 0.3  # rad: standard deviation of the target's heading change per period
TARGET_MARGIN = 0.1  # the target bounces off walls this far inside the arena
TARGET_RADIUS = 0.05  # drawn size of the target disc
SUCCESS_RADIUS = 0.06
HOLD_STEPS = 5  # consecutive periods within SUCCESS_RADIUS
MIN_START_DISTANCE = 0.35
BIAS_ANGLE = 0.35  # rad, the largest rotation of the executed velocity (per episode)
BIAS_GAIN = 0.2  # the executed speed is 1 +- this (per episode)
NOISE = 0.02  # arena units per second: white actuation noise (standard deviation per axis)
INSTRUCTION = "reach the red target"


@dataclass
class Reacher:
    """One episode of the task. ``step`` advances it by one control period."""

    rng: np.random.Generator
    gripper: np.ndarray = field(init=False)
    target: np.ndarray = field(init=False)
    heading: float = field(init=False)
    bias_angle: float = field(init=False)
    bias_gain: float = field(init=False)
    texture: np.ndarray = field(init=False)
    steps: int = 0
    inside: int = 0  # consecutive periods within SUCCESS_RADIUS so far
    success_step: int | None = None

    def __post_init__(self) -> None:
        rng = self.rng
        self.target = rng.uniform(0.2, 0.8, 2)
        while True:
            self.gripper = rng.uniform(0.08, 0.92, 2)
            if np.linalg.norm(self.gripper - self.target) >= MIN_START_DISTANCE:
                break
        self.heading = float(rng.uniform(-math.pi, math.pi))
        self.bias_angle = float(rng.uniform(-BIAS_ANGLE, BIAS_ANGLE))
        self.bias_gain = float(rng.uniform(1 - BIAS_GAIN, 1 + BIAS_GAIN))
        coarse = rng.normal(0.0, 7.0, (IMAGE_SIZE // 8, IMAGE_SIZE // 8, 1))
        self.texture = np.kron(coarse, np.ones((8, 8, 1)))

    @property
    def state(self) -> np.ndarray:
        """What the robot reports: the gripper's and the target's position (x, y, x, y)."""
        return np.concatenate([self.gripper, self.target]).astype(np.float32)

    @property
    def distance(self) -> float:
        return float(np.linalg.norm(self.gripper - self.target))

    @property
    def succeeded(self) -> bool:
        return self.success_step is not None

    def executed_velocity(self, commanded: np.ndarray) -> np.ndarray:
        """The velocity the arm really moves at for a commanded planar velocity (bias and noise applied)."""
        c, s = math.cos(self.bias_angle), math.sin(self.bias_angle)
        rotated = np.array([c * commanded[0] - s * commanded[1], s * commanded[0] + c * commanded[1]])
        return self.bias_gain * rotated + self.rng.normal(0.0, NOISE, 2)

    def step(self, commanded: np.ndarray) -> None:
        """Execute ``commanded`` (arena units per second, planar) for one period and move the target."""
        self.gripper = np.clip(self.gripper + self.executed_velocity(np.asarray(commanded, np.float64)) * DT, 0.0, 1.0)
        self.heading += float(self.rng.normal(0.0, TARGET_TURN))
        target = self.target + TARGET_SPEED * DT * np.array([math.cos(self.heading), math.sin(self.heading)])
        for axis in range(2):
            if not TARGET_MARGIN <= target[axis] <= 1 - TARGET_MARGIN:
                self.heading = math.pi - self.heading if axis == 0 else -self.heading
                target[axis] = np.clip(target[axis], TARGET_MARGIN, 1 - TARGET_MARGIN)
        self.target = target
        self.steps += 1
        self.inside = self.inside + 1 if self.distance <= SUCCESS_RADIUS else 0
        if self.inside >= HOLD_STEPS and self.success_step is None:
            self.success_step = self.steps

    def render(self) -> np.ndarray:
        """Top-down RGB uint8 image (IMAGE_SIZE, IMAGE_SIZE, 3): x to the right, y downwards."""
        image = np.clip(np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 128.0) + self.texture, 0, 255)
        centres = (np.arange(IMAGE_SIZE) + 0.5) / IMAGE_SIZE
        ys, xs = np.meshgrid(centres, centres, indexing="ij")
        tx, ty = self.target
        image[(xs - tx) ** 2 + (ys - ty) ** 2 <= TARGET_RADIUS**2] = (215, 40, 40)
        gx, gy = self.gripper
        arm, half_width = 0.045, 0.012
        cross = (((np.abs(xs - gx) <= half_width) & (np.abs(ys - gy) <= arm))
                 | ((np.abs(ys - gy) <= half_width) & (np.abs(xs - gx) <= arm)))
        image[cross] = (245, 245, 245)
        return image.astype(np.uint8)


def expert_velocity(state: np.ndarray) -> np.ndarray:
    """The expert's planar velocity command for a state (gripper x, y, target x, y): proportional, speed-limited."""
    velocity = GAIN * (np.asarray(state[2:4], np.float64) - np.asarray(state[:2], np.float64))
    speed = float(np.linalg.norm(velocity))
    return velocity if speed <= MAX_SPEED else velocity * (MAX_SPEED / speed)


def velocity_to_delta(velocity: np.ndarray) -> np.ndarray:
    """The 6-d EEF delta (x, y, z, rotation) that lightvla_node turns back into ``velocity`` (linear_scale, DT)."""
    delta = np.zeros(6)
    delta[:2] = np.asarray(velocity, np.float64) * DT / LINEAR_SCALE
    return delta

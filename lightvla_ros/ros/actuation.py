"""Actuation: one class per action space owns its publishers, executes chunk steps one per ``dt`` through the chunk
scheduler (:mod:`.core.scheduler`: open_loop, replace, async, temporal_ensemble) and stops motion.

The node hands every computed chunk to :meth:`Actuator.execute`, calls :meth:`Actuator.tick` every ``dt`` and asks
:meth:`Actuator.wants_inference` before each inference; it never branches on the action space itself. Nothing reaches
the actuation topics (``ee_twist``, ``joint_trajectory``, ``gripper``) while ``publish_actions`` is false.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable

import numpy as np
from geometry_msgs.msg import TwistStamped
from nav_msgs.msg import Path
from std_msgs.msg import Float64
from trajectory_msgs.msg import JointTrajectory

from lightvla_ros.ros import messages
from lightvla_ros.ros.core import chunks as chunk_math
from lightvla_ros.ros.core.params import NodeConfig
from lightvla_ros.ros.core.scheduler import ChunkScheduler, SchedulerSettings

PublisherFactory = Callable[[Any, str], Any]  # (message type, topic) -> publisher
StampFn = Callable[[], Any]  # -> builtin_interfaces/Time of now
ClockFn = Callable[[], float]  # -> now in seconds on the node's clock


def scheduler_settings(cfg: NodeConfig) -> SchedulerSettings:
    """The scheduler's settings from the node's parameters of the same names."""
    return SchedulerSettings(dt=cfg.dt, mode=cfg.execution_mode, async_threshold=cfg.async_threshold,
                             async_aggregation=cfg.async_aggregation, ensemble_decay=cfg.ensemble_decay)


class Actuator(ABC):
    """The actuation of one action space. Thread-safe: the worker executes chunks, the executor ticks."""

    def __init__(self, make_publisher: PublisherFactory, config: Callable[[], NodeConfig],
                 now: ClockFn, now_stamp: StampFn) -> None:
        self._config = config
        self._now = now
        self._now_stamp = now_stamp
        self.scheduler = ChunkScheduler(scheduler_settings(config()))
        self.publishers = [make_publisher(Float64, 'gripper')]

    def configure(self, cfg: NodeConfig) -> None:
        """Apply run-time changes of the execution mode and its knobs."""
        self.scheduler.configure(scheduler_settings(cfg))

    def wants_inference(self) -> bool:
        """Whether the execution mode asks for a new chunk now (open_loop: once the queue is empty, ...); with actuation
        gated off nothing is queued, so every mode infers on each fresh observation."""
        return self.scheduler.wants_inference()

    def executable_steps(self, num_steps: int, obs_time: float, now: float) -> int:
        """How many steps of a chunk observed at ``obs_time`` would still be executed now."""
        return self.scheduler.executable_steps(num_steps, obs_time, now)

    def check(self, action_dim: int) -> str:
        """Why this actuation cannot drive a model with ``action_dim`` outputs, or ''."""
        gripper = self._config().gripper_index
        if gripper >= action_dim:
            return f'gripper_index {gripper} >= action dims {action_dim}'
        return ''

    def execute(self, chunk: np.ndarray, obs_time: float, stamp: Any) -> None:
        """Merge a chunk observed at ``obs_time`` into the plan (how: the execution mode) and show the plan."""
        if not self._config().publish_actions:
            executable = self.scheduler.executable_steps(len(chunk), obs_time, self._now())
            self._show_plan(chunk[len(chunk) - executable:], stamp)
            return
        self.scheduler.merge(chunk, obs_time, self._now())
        plan = self.scheduler.plan()
        self._show_plan(plan, stamp)
        if len(plan):
            self._start(plan, stamp)

    def tick(self) -> None:
        """One control period: the scheduled step, or the end-of-plan stop."""
        tick = self.scheduler.tick(self._now())
        if tick.stop:
            self._on_chunk_end()
            return
        if tick.row is None or not self._config().publish_actions:
            return
        self._step(tick.row)
        gripper = self._config().gripper_index
        if gripper >= 0:
            self.publishers[0].publish(Float64(data=float(tick.row[gripper])))

    def stop(self) -> None:
        """Drop queued steps and command a stop when anything was moving."""
        if self.scheduler.clear():
            self._command_stop()

    def _show_plan(self, plan: np.ndarray, stamp: Any) -> None:
        """Publish a visualisation of the plan (never gated: it moves nothing)."""

    @abstractmethod
    def _start(self, plan: np.ndarray, stamp: Any) -> None:
        """What happens when the plan changes (a chunk was merged): ``plan`` is every queued row, next first."""

    @abstractmethod
    def _step(self, row: np.ndarray) -> None:
        """What happens at each control tick with the current row."""

    @abstractmethod
    def _on_chunk_end(self) -> None:
        """What happens when the last step of the last chunk was executed and no new chunk came."""

    @abstractmethod
    def _command_stop(self) -> None:
        """Bring the robot to rest now (motion disabled, deactivation, stop instruction)."""


class EefDeltaActuator(Actuator):
    """End-effector deltas (xyz, rotation vector, gripper) streamed as TwistStamped, the plan shown as a Path."""

    def __init__(self, make_publisher: PublisherFactory, config: Callable[[], NodeConfig],
                 now: ClockFn, now_stamp: StampFn) -> None:
        super().__init__(make_publisher, config, now, now_stamp)
        self._twist = make_publisher(TwistStamped, 'ee_twist')
        self._path = make_publisher(Path, 'ee_path')
        self.publishers += [self._twist, self._path]

    def check(self, action_dim: int) -> str:
        if action_dim < 6:
            return f'action_space eef_delta needs >= 6 action dims, the model has {action_dim}'
        return super().check(action_dim)

    def _show_plan(self, plan: np.ndarray, stamp: Any) -> None:
        if len(plan):
            cfg = self._config()
            self._path.publish(messages.path_msg(plan, cfg.linear_scale, cfg.angular_scale, stamp, cfg.frame_id))

    def _start(self, plan: np.ndarray, stamp: Any) -> None:
        return None  # steps are streamed by tick()

    def _step(self, row: np.ndarray) -> None:
        cfg = self._config()
        linear, angular = chunk_math.delta_to_twist(row, cfg.linear_scale, cfg.angular_scale, cfg.dt)
        self._twist.publish(messages.twist_msg(linear, angular, self._now_stamp(), cfg.frame_id))

    def _on_chunk_end(self) -> None:
        self._command_stop()

    def _command_stop(self) -> None:
        self._twist.publish(messages.twist_msg(np.zeros(3), np.zeros(3), self._now_stamp(), self._config().frame_id))


class JointActuator(Actuator):
    """Joint positions of the first action dimensions sent as one JointTrajectory per chunk; holds on stop."""

    def __init__(self, make_publisher: PublisherFactory, config: Callable[[], NodeConfig],
                 now: ClockFn, now_stamp: StampFn, measured_joints: Callable[[list[str]], list[float] | None]) -> None:
        super().__init__(make_publisher, config, now, now_stamp)
        self._trajectory = make_publisher(JointTrajectory, 'joint_trajectory')
        self._measured_joints = measured_joints
        self.publishers.append(self._trajectory)

    def check(self, action_dim: int) -> str:
        names = self._config().joint_names
        if len(names) > action_dim:
            return f'{len(names)} joint_names but only {action_dim} action dims'
        return super().check(action_dim)

    def _start(self, plan: np.ndarray, stamp: Any) -> None:
        """Republish the trajectory whenever the plan changes, stamped now and starting at the next step."""
        cfg = self._config()
        names = list(cfg.joint_names)
        positions = plan[:, :len(names)].astype(np.float64)
        velocities = chunk_math.fill_velocities(positions, cfg.dt)
        self._trajectory.publish(messages.trajectory_msg(names, positions, velocities, cfg.dt, stamp))

    def _step(self, row: np.ndarray) -> None:
        return None  # the controller interpolates the trajectory; only the gripper is streamed

    def _on_chunk_end(self) -> None:
        return None  # the trajectory's last point is at rest

    def _command_stop(self) -> None:
        """Hold at the measured joint positions (nothing is sent when they are unknown: no guessed target)."""
        cfg = self._config()
        names = list(cfg.joint_names)
        positions = self._measured_joints(names)
        if positions is None:
            return
        self._trajectory.publish(messages.trajectory_msg(names, np.asarray([positions]), np.zeros((1, len(names))),
                                                         cfg.dt, self._now_stamp()))


def make_actuator(config: Callable[[], NodeConfig], make_publisher: PublisherFactory,
                  now: ClockFn, now_stamp: StampFn,
                  measured_joints: Callable[[list[str]], list[float] | None]) -> Actuator:
    """The actuator of the configured action space."""
    if config().action_space == 'joint':
        return JointActuator(make_publisher, config, now, now_stamp, measured_joints)
    return EefDeltaActuator(make_publisher, config, now, now_stamp)

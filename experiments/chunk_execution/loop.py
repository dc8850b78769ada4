"""Sessions on the simulated robot: recording the expert with ``lightvla record`` and closed-loop episodes of a
policy run by ``lightvla_node`` on sim time (in this process, the policy wrapped to inject latency)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import rclpy
from geometry_msgs.msg import TwistStamped
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter

from experiments.chunk_execution import reacher
from experiments.chunk_execution.sim_node import Lockstep, SimGate, SimLatencyPolicy, SimRobot, sim_stamp
from lightvla_ros.contract import Policy, PolicySettings

DATA_CONFIG = """\
# lightvla record / lightvla train: the simulated reacher's topics
cameras: [camera/image_raw]
instruction: instruction
state:
  topic: state
actions:
  - topic: ee_twist          # the expert's command; divided by scale it is lightvla_node's EEF delta
    scale: [{linear}, {linear}, {linear}, {angular}, {angular}, {angular}]
gripper_dims: []
max_stamp_gap: 0.1
episode_gap: 2.0
stamps: receive
"""
ANGULAR_SCALE = 0.5


def isolate_ros_domain() -> int:
    """A private ROS domain on loopback for this run (``LIGHTVLA_STUDY_DOMAIN_ID``, else derived from the pid),
    inherited by ``lightvla record``."""
    from lightvla_ros.ros.core import domain

    return domain.isolate_ros_domain(int(os.environ.get('LIGHTVLA_STUDY_DOMAIN_ID', domain.private_domain_id())))


def data_config_text() -> str:
    """The ``--data-config`` of the reacher: twist (units/s) / (scale / dt) = the node's EEF delta."""
    return DATA_CONFIG.format(linear=reacher.LINEAR_SCALE / reacher.DT, angular=ANGULAR_SCALE / reacher.DT)


def node_parameters(checkpoint: str) -> dict[str, Any]:
    """lightvla_node's parameters for the reacher (the execution mode is set per run)."""
    return {
        'use_sim_time': True, 'checkpoint': checkpoint, 'camera_topics': ['camera/image_raw'], 'camera_types': ['raw'],
        'state_source': 'float32_array', 'missing_state': 'wait', 'max_state_age': 0.25, 'max_image_age': 0.25,
        'sync_tolerance': 0.05, 'center_crop': False, 'preprocessing': 'plain', 'cpu_threads': 1, 'debug_image': False,
        'action_space': 'eef_delta', 'gripper_index': -1, 'dt': reacher.DT, 'action_lower': [-1.0] * 6,
        'action_upper': [1.0] * 6, 'linear_scale': reacher.LINEAR_SCALE, 'angular_scale': ANGULAR_SCALE,
        'publish_actions': True,
    }


@dataclass
class EpisodeLog:
    """What one closed-loop episode did, per control period."""

    seed: int
    commands: list[np.ndarray] = field(default_factory=list)  # executed commands (planar velocity, units/s)
    new_chunk: list[bool] = field(default_factory=list)  # a chunk arrived during the period
    success_step: int | None = None
    inference_calls: int = 0

    @property
    def steps(self) -> int:
        return len(self.commands)


class ClosedLoop:
    """``lightvla_node`` (in this process, policy from ``policy_factory`` behind a sim-time latency) and the sim
    robot on one executor in a private context. Use as a context manager."""

    def __init__(self, policy_factory: Callable[[PolicySettings], Policy], checkpoint: str,
                 parameters: dict[str, Any] | None = None) -> None:
        from lightvla_ros.ros.node import LightVLANode

        self.context = Context()
        rclpy.init(context=self.context)
        self.gate = SimGate()
        self.policy: SimLatencyPolicy | None = None

        def wrapped(settings: PolicySettings) -> Policy:
            self.policy = SimLatencyPolicy(policy_factory(settings), self.gate)
            return self.policy  # type: ignore[return-value]

        params = {**node_parameters(checkpoint), **(parameters or {})}
        self.sim = SimRobot(self.context, self.gate)
        self.sim.publish_clock()
        self.node = LightVLANode(context=self.context, policy_factory=wrapped,
                                 parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.sim)
        self.executor.add_node(self.node)
        self.lockstep = Lockstep(self.executor, self.sim, self.node.get_clock().now)
        if not self.lockstep.spin(self._ready, 60.0):
            raise RuntimeError(f'lightvla_node did not become ready: {self.node.model_error or self.node.model_state}')

    def _ready(self) -> bool:
        sim = self.sim
        return (self.node.model_state == 'ready' and sim.camera_pub.get_subscription_count() > 0
                and sim.state_pub.get_subscription_count() > 0 and sim.instruction_pub.get_subscription_count() > 0)

    def __enter__(self) -> 'ClosedLoop':
        return self

    def __exit__(self, *exc: Any) -> None:
        self.gate.close()
        self.node.trigger_shutdown()
        self.executor.shutdown()
        self.node.destroy_node()
        self.sim.destroy_node()
        rclpy.shutdown(context=self.context)

    def configure(self, latency_steps: int, **parameters: Any) -> str:
        """Set the injected latency and node parameters (e.g. execution_mode); returns why not, or ''."""
        self.policy.latency = latency_steps * reacher.DT
        results = self.node.set_parameters([Parameter(k, value=v) for k, v in parameters.items()])
        return '; '.join(r.reason for r in results if not r.successful)

    def episode(self, seed: int, max_steps: int) -> EpisodeLog:
        """One episode from a fresh task of ``seed``: instruct, run until success or ``max_steps``, stop."""
        task, log, sim = reacher.Reacher(np.random.default_rng(seed)), EpisodeLog(seed), self.sim
        tracker = self.node.health.tracker
        sim.instruct(reacher.INSTRUCTION)
        if not self.lockstep.spin(lambda: tracker.snapshot().text == reacher.INSTRUCTION, 5.0):
            raise RuntimeError('lightvla_node did not take the instruction')
        calls = self.gate.calls
        while log.steps < max_steps and not task.succeeded:
            command, new_chunk = self.lockstep.advance(task)
            log.commands.append(command)
            log.new_chunk.append(new_chunk)
        log.success_step, log.inference_calls = task.success_step, self.gate.calls - calls
        sim.instruct('')
        self.lockstep.spin(lambda: tracker.snapshot().text is None, 5.0)
        self.lockstep.flush(int(round(self.policy.latency / reacher.DT)) + 3)  # past max_image_age: no stale frame
        return log


def record_demonstrations(bag: Path, episodes: int, steps: int, seed: int, data_config: Path,
                          on_progress: Callable[[str], None] = print) -> None:
    """Drive the sim with the expert while ``lightvla record`` (a separate process, as a user runs it) records the
    topics of ``data_config`` into ``bag``. Each episode opens with the instruction and ends with ''."""
    context = Context()
    rclpy.init(context=context)
    sim = SimRobot(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(sim)
    lockstep = Lockstep(executor, sim)
    recorder = subprocess.Popen([sys.executable, '-m', 'lightvla_ros.cli', 'record', str(bag), '--data-config', str(data_config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        topics = [p.topic_name for p in (sim.camera_pub, sim.state_pub, sim.instruction_pub, sim.twist_pub)]

        def subscribed() -> bool:
            return all(any(i.node_name == 'lightvla_record' for i in sim.get_subscriptions_info_by_topic(t)) for t in topics)

        if not lockstep.spin(lambda: subscribed() or recorder.poll() is not None, 60.0):
            raise RuntimeError('lightvla record did not subscribe to the sim topics within 60 s')
        if recorder.poll() is not None:
            raise RuntimeError(f'lightvla record exited: {recorder.stderr.read()}')
        rng = np.random.default_rng(seed)
        for index in range(episodes):
            task = reacher.Reacher(np.random.default_rng(int(rng.integers(2**31))))
            sim.instruct(reacher.INSTRUCTION)
            lockstep.spin(lambda: False, 0.02)
            for _ in range(steps):
                sim.publish_clock()
                sim.camera_pub.publish(sim.publish_state(task))
                lockstep.spin(lambda: False, 0.003)
                velocity = reacher.expert_velocity(task.state)
                twist = TwistStamped()
                twist.header.stamp, twist.header.frame_id = sim_stamp(sim.step_index), 'base_link'
                twist.twist.linear.x, twist.twist.linear.y = float(velocity[0]), float(velocity[1])
                sim.twist_pub.publish(twist)
                lockstep.spin(lambda: False, 0.004)
                task.step(velocity)
                sim.step_index += 1
            sim.instruct('')
            lockstep.spin(lambda: False, 0.05)
            on_progress(f'recorded demonstration {index + 1}/{episodes}')
        lockstep.spin(lambda: False, 1.0)
    finally:
        recorder.send_signal(signal.SIGINT)
        try:
            _, err = recorder.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            recorder.kill()
            _, err = recorder.communicate()
        executor.shutdown()
        sim.destroy_node()
        rclpy.shutdown(context=context)
    if recorder.returncode not in (0, 130, -signal.SIGINT) or not (bag / 'metadata.yaml').is_file():
        raise RuntimeError(f'lightvla record failed ({recorder.returncode}): {err[-2000:]}')

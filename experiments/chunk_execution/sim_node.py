"""The reacher as a ROS 2 robot on sim time, driven through ``lightvla_node`` or by its expert.

:class:`SimRobot` owns ``/clock`` and publishes what a robot driver would: the camera image, the state
(``std_msgs/Float32MultiArray``: gripper x, y, target x, y) and, between episodes, the instruction. It executes
``ee_twist`` the way a velocity-controlled driver does: the planar linear velocity of the twist stamped in the
current control period is applied for that period; with no fresh command the arm holds still (a one-period
watchdog).

Lockstep. The sim advances time one control period at a time and only once the system has settled, so a run is
reproducible (up to thread scheduling, which the waits below make very unlikely to matter):

1. publish ``/clock`` = t; wait for the node's control tick (its twist stamped t, or a short grace on ticks with
   nothing to execute);
2. publish the state and frame stamped t; wait until any inference the node starts on them has computed;
3. release the inferences whose injected latency has passed and wait until their chunks are published (a worker
   that was waiting then finds the frame of t, as a node on a real robot finds the newest frame);
4. execute the period's command and move the target.

The model's compute time therefore costs no sim time; the latency of a run is what :class:`SimLatencyPolicy`
injects: a prediction requested at sim time t returns when the sim clock reaches t + latency.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import TwistStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, String

from experiments.chunk_execution import reacher
from lightvla_ros.ros.entry import spin_until

PERIOD_NS = int(round(reacher.DT * 1e9))
FIRST_STEP = 10  # sim time starts at FIRST_STEP x DT (a zero clock means "no sim time yet" to ROS)
TICK_GRACE = 0.03  # s (wall) to wait for a control tick that sends nothing
SETTLE = 0.004  # s (wall) for the node's worker to pick up a new frame before the sim checks it is computing
RESULT_TIMEOUT = 2.0  # s (wall): a released inference whose chunk never comes (discarded) stops being waited for
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


class SimGate:
    """Shared by the sim and the latency wrapper: the sim clock, inferences computing, and results released."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.now = 0.0  # sim seconds: the time a prediction asked now is stamped with
        self.released = 0.0  # sim seconds: results due at or before this time may return
        self.computing = 0
        self.waiting = 0  # computed, waiting for their release
        self.calls = 0
        self.returned = 0

    def begin(self) -> float:
        with self._cond:
            self.computing += 1
            self.calls += 1
            return self.now

    def computed(self) -> None:
        with self._cond:
            self.computing -= 1
            self.waiting += 1

    def release(self, until: float) -> None:
        """Let the results due at or before ``until`` return."""
        with self._cond:
            self.released = until
            self._cond.notify_all()

    def wait_until(self, deadline: float) -> None:
        """Block until results due at ``deadline`` (the injected latency) are released, or the gate is closed."""
        with self._cond:
            self._cond.wait_for(lambda: self.released >= deadline - 1e-9)
            self.waiting -= 1
            self.returned += 1

    def close(self) -> None:
        """Release every waiting inference (the sim stops)."""
        self.release(float('inf'))


class SimLatencyPolicy:
    """A policy whose result arrives ``latency`` sim seconds after the request (the compute itself is free)."""

    def __init__(self, policy: Any, gate: SimGate, latency: float = 0.0) -> None:
        self._policy = policy
        self._gate = gate
        self.latency = latency

    def __getattr__(self, name: str) -> Any:
        return getattr(self._policy, name)

    def predict(self, images: Sequence[Any], instruction: str, proprio: Any = None) -> Any:
        start = self._gate.begin()
        try:
            output = self._policy.predict(images, instruction, proprio)
        finally:
            self._gate.computed()
        self._gate.wait_until(start + self.latency)
        return output


class ExpertPolicy:
    """The expert as a chunk policy (smoke tests): every step of the chunk is the expert's command for the state."""

    num_images, use_proprio, proprio_dim, action_dim, patches_per_image = 1, True, 4, 6, 16
    device, device_name, dtype = 'cpu', 'expert', 'float32'

    def __init__(self, chunk_len: int = 8) -> None:
        self.chunk_len = chunk_len

    def check_pruning(self, method: str, max_kept_tokens: int | None) -> str:
        return ''

    def set_pruning(self, method: str, max_kept_tokens: int | None) -> None:
        return None

    def warmup(self) -> None:
        return None

    def release(self) -> None:
        return None

    def predict(self, images: Sequence[Any], instruction: str, proprio: Any = None) -> Any:
        from lightvla_ros.contract import PolicyOutput

        delta = reacher.velocity_to_delta(reacher.expert_velocity(np.asarray(proprio)))
        actions = np.tile(delta, (self.chunk_len, 1)).astype(np.float32)
        return PolicyOutput(actions=actions, normalized_actions=actions, kept_patch_indices=np.arange(16),
                            num_kept=16, num_patches=16, patches_per_image=16, grid_size=4, keep_ratio=1.0)


def sim_stamp(step: int) -> Time:
    ns = step * PERIOD_NS
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class SimRobot(Node):
    """The reacher on topics (see the module docstring)."""

    def __init__(self, context: Any, gate: SimGate | None = None, camera_topic: str = 'camera/image_raw') -> None:
        super().__init__('sim_robot', context=context)
        self.gate = gate or SimGate()
        self.clock_pub = self.create_publisher(Clock, '/clock', 10)
        self.camera_pub = self.create_publisher(Image, camera_topic, RELIABLE)
        self.state_pub = self.create_publisher(Float32MultiArray, 'state', RELIABLE)
        self.instruction_pub = self.create_publisher(String, 'instruction', 10)
        self.twist_pub = self.create_publisher(TwistStamped, 'ee_twist', RELIABLE)
        self.create_subscription(TwistStamped, 'ee_twist', self._on_twist, RELIABLE)
        self.create_subscription(Float32MultiArray, 'action_chunk', self._on_chunk, 50)
        self.step_index = FIRST_STEP
        self.chunks = 0
        self._twist: tuple[int, np.ndarray] | None = None  # (stamp ns, planar velocity)

    def _on_twist(self, msg: TwistStamped) -> None:
        ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self._twist = (ns, np.array([msg.twist.linear.x, msg.twist.linear.y]))

    def _on_chunk(self, msg: Float32MultiArray) -> None:
        self.chunks += 1

    def forgive_discarded(self) -> None:
        """Count results that were discarded (computed for a finished episode) as published."""
        self.chunks = max(self.chunks, self.gate.returned)

    @property
    def now_ns(self) -> int:
        return self.step_index * PERIOD_NS

    def command(self) -> np.ndarray:
        """The command of the current period: a twist stamped in it, else zero (the watchdog)."""
        if self._twist is not None and self.now_ns - PERIOD_NS < self._twist[0] <= self.now_ns:
            return self._twist[1]
        return np.zeros(2)

    def publish_clock(self) -> None:
        self.clock_pub.publish(Clock(clock=sim_stamp(self.step_index)))

    def publish_state(self, task: reacher.Reacher) -> Image:
        """Publish the state; returns the camera frame of the same instant, to publish once the state is in."""
        stamp = sim_stamp(self.step_index)
        pixels = task.render()
        image = Image(height=pixels.shape[0], width=pixels.shape[1], encoding='rgb8', step=pixels.shape[1] * 3,
                      data=pixels.tobytes())
        image.header.stamp, image.header.frame_id = stamp, 'camera'
        self.state_pub.publish(Float32MultiArray(data=task.state.tolist()))
        return image

    def instruct(self, text: str) -> None:
        self.instruction_pub.publish(String(data=text))


class Lockstep:
    """Steps a :class:`SimRobot` in lockstep with ``lightvla_node`` (see the module docstring)."""

    def __init__(self, executor: SingleThreadedExecutor, sim: SimRobot, node_clock: Callable[[], Any] | None = None) -> None:
        self.executor = executor
        self.sim = sim
        self.node_clock = node_clock  # the controlled node's clock: its control tick comes once /clock reached it

    def spin(self, predicate: Callable[[], bool], timeout: float) -> bool:
        return spin_until(self.executor, predicate, timeout, period=0.001)

    def advance(self, task: reacher.Reacher | None) -> tuple[np.ndarray, bool]:
        """One control period (steps 1-4 of the module docstring); returns the executed command and whether a new
        chunk arrived during the period. ``task`` None: the clock advances with nothing observed and results are not
        waited for (between episodes, when the node discards them: see :meth:`flush`)."""
        sim = self.sim
        chunks_before = sim.chunks
        sim.publish_clock()
        if self.node_clock is not None:
            self.spin(lambda: self.node_clock().nanoseconds >= sim.now_ns, RESULT_TIMEOUT)
        self.spin(lambda: sim._twist is not None and sim._twist[0] == sim.now_ns, TICK_GRACE)
        sim.gate.now = sim.now_ns * 1e-9
        if task is not None:
            frame = sim.publish_state(task)
            self.spin(lambda: False, SETTLE)  # the state first: the frame wakes the node's worker, which needs it
            sim.camera_pub.publish(frame)
            self._settle()
        sim.gate.release(sim.gate.now)  # after the tick and the frame: a result due now is executed from the next tick
        if task is None:
            self.spin(lambda: False, SETTLE)
        else:
            self._settle()
        command = sim.command()  # read last: on a busy CPU a tick's twist can come after the grace
        if task is not None:
            task.step(command)
        sim.step_index += 1
        return command, sim.chunks > chunks_before

    def flush(self, periods: int) -> None:
        """Advance ``periods`` with nothing observed (the node is idle) until every inference has returned; the
        results it discarded (computed for a finished episode) then count as published."""
        for _ in range(periods):
            self.advance(None)
        gate = self.sim.gate
        self.spin(lambda: gate.computing == 0 and gate.waiting == 0, RESULT_TIMEOUT)
        self.spin(lambda: False, SETTLE)
        self.sim.forgive_discarded()

    def _settle(self) -> None:
        """Wait until nothing computes and every returned result has been published."""
        sim, gate = self.sim, self.sim.gate
        self.spin(lambda: False, SETTLE)
        deadline = time.monotonic() + RESULT_TIMEOUT
        while time.monotonic() < deadline:
            if gate.computing == 0 and sim.chunks >= gate.returned:
                break
            self.executor.spin_once(timeout_sec=0.001)

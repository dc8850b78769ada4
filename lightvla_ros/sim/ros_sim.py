"""LIBERO as a ROS 2 robot: the ``lightvla_libero_sim`` node and the ``node`` backend of ``lightvla eval-libero``.

The simulator publishes ``/clock`` (one ``dt`` per env step), the robot state (``sensor_msgs/JointState``, stamped) and
both cameras (``sensor_msgs/Image``, rotated 180 degrees as the training data is, stamped). It drives the robot in one
of two ways, like two kinds of robot driver:

* ``chunk`` (the authors' protocol, deterministic): it waits for the ``action_chunk`` whose ``chunk_info`` names the
  observation's stamp and executes it, the clock standing still while the model runs. ``publish_actions`` stays off.
* ``stream``: it steps on at ``real_time_factor`` and executes, at each step, the ``ee_twist`` and ``gripper`` commands
  the node's own chunk scheduler streams (``publish_actions`` on, the node's ``execution_mode``), holding the last
  twist for two periods and then stopping. The model's latency then costs robot time, as on real hardware.

``lightvla_node`` needs nothing LIBERO-specific: it runs on ``use_sim_time`` with :func:`node_parameters`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import rclpy
import yaml
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import TwistStamped
from lifecycle_msgs.srv import GetState
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32MultiArray, Float64, String

from lightvla_ros.model.errors import LightVLAError
from lightvla_ros.ros.endpoints import RELIABLE
from lightvla_ros.ros.messages import chunk_checksum
from lightvla_ros.sim.evaluation import Query
from lightvla_ros.sim.libero_protocol import CONTROL_PERIOD, twist_command

# The 8-d model state by name: eef position, eef orientation as axis-angle, gripper finger joints.
STATE_NAMES = ("eef_pos_x", "eef_pos_y", "eef_pos_z", "eef_axis_angle_x", "eef_axis_angle_y", "eef_axis_angle_z",
               "gripper_finger_left", "gripper_finger_right")
PR_SET_PDEATHSIG = 1  # prctl option: the signal a child gets when its parent dies
ERROR_LEVEL = DiagnosticStatus.ERROR
CAMERA_TOPICS = ("agentview/image_raw", "wrist/image_raw")  # third-person first, then wrist: the policy's order
CAMERA_FRAMES = ("agentview_camera", "eye_in_hand_camera")
STATE_TOPIC = "robot_state"


def node_parameters(checkpoint: str, unnorm_key: str, device: str, dtype: str, pruning: str = "lightvla",
                    cpu_threads: int = 0, drive: str = "chunk", execution_mode: str = "open_loop",
                    readout: str = "last") -> dict[str, Any]:
    """``lightvla_node`` parameters for this simulator: sim time, its topics, the 8 named state entries, the authors'
    image chain (centre crop), the state matched to the frames of the same step (``sync_tolerance`` below ``dt``);
    for ``chunk`` no actuation topics (``action_chunk`` is executed), for ``stream`` the twist stream of
    ``execution_mode``."""
    streamed = {"execution_mode": execution_mode, "publish_actions": True} if drive == "stream" else {}
    return {
        "checkpoint": checkpoint, "unnorm_key": unnorm_key, "device": device, "dtype": dtype, "pruning": pruning,
        "readout": readout, "cpu_threads": cpu_threads, "use_sim_time": True, "center_crop": True, "preprocessing": "auto",
        "camera_topics": list(CAMERA_TOPICS), "camera_types": ["raw", "raw"],
        "state_source": "joint_states", "state_topic": STATE_TOPIC, "state_joint_names": list(STATE_NAMES),
        "missing_state": "wait", "sync_tolerance": CONTROL_PERIOD / 5, "dt": CONTROL_PERIOD,
        "execution_mode": "open_loop", "publish_actions": False, "debug_image": False, **streamed,
    }


def _stamp(nanoseconds: int) -> Any:
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def _stamp_text(stamp: Any) -> str:
    return f"{int(stamp.sec)}.{int(stamp.nanosec):09d}"


class LiberoSimNode(Node):
    """Publishes what the simulator sees and hands over the chunks ``lightvla_node`` computed for it."""

    def __init__(self, namespace: str = "", dt: float = CONTROL_PERIOD, chunk_timeout_s: float = 600.0,
                 republish_s: float = 2.0, real_time_factor: float = 1.0) -> None:
        super().__init__("lightvla_libero_sim", namespace=namespace)
        self.dt = dt
        self.real_time_factor = real_time_factor
        self.chunk_timeout_s = chunk_timeout_s
        self.republish_s = republish_s
        # Sim time starts at the wall clock (whole milliseconds), so that it never runs backwards for a node that saw an
        # earlier run, and counts whole steps in integer nanoseconds, so that stamps are exact.
        self._start_ns = time.time_ns() // 1_000_000 * 1_000_000
        self._dt_ns = round(dt * 1e9)
        self.steps = 0
        self._clock = self.create_publisher(Clock, "/clock", 10)
        self._cameras = [self.create_publisher(Image, topic, 2) for topic in CAMERA_TOPICS]
        self._state = self.create_publisher(JointState, STATE_TOPIC, 10)
        self._instruction = self.create_publisher(String, "instruction", RELIABLE)
        self._cond = threading.Condition()
        self._chunks: deque[np.ndarray] = deque(maxlen=64)
        self._infos: deque[dict[str, str]] = deque(maxlen=64)
        self.create_subscription(Float32MultiArray, "action_chunk", self._on_chunk, RELIABLE)
        self.create_subscription(DiagnosticStatus, "chunk_info", self._on_info, RELIABLE)
        self._twist: tuple[int, np.ndarray, np.ndarray] | None = None  # (stamp in ns, linear, angular)
        self._gripper = 1.0  # model convention: open until told otherwise
        self.create_subscription(TwistStamped, "ee_twist", self._on_twist, RELIABLE)
        self.create_subscription(Float64, "gripper", self._on_gripper, RELIABLE)
        self._last_command_at = time.monotonic()
        self.node_model_status: tuple[bytes, str] | None = None  # lightvla_node's 'model' diagnostics (level, text)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.instruction = ""
        self.publish_clock()

    # ------------------------------------------------------------------ what the robot publishes

    def _now_ns(self) -> int:
        return self._start_ns + self.steps * self._dt_ns

    def publish_clock(self) -> None:
        self._clock.publish(Clock(clock=_stamp(self._now_ns())))

    def advance(self) -> None:
        """One control period of physics happened."""
        self.steps += 1
        self.publish_clock()

    def set_instruction(self, text: str) -> None:
        self.instruction = text
        self._instruction.publish(String(data=text))

    def observe(self, frames: Sequence[np.ndarray], state: np.ndarray) -> str:
        """Publish the state, then both frames, stamped now; returns the stamp as ``chunk_info`` writes it."""
        stamp = _stamp(self._now_ns())
        joint_state = JointState(name=list(STATE_NAMES), position=[float(v) for v in state])
        joint_state.header.stamp = stamp
        self._state.publish(joint_state)
        for publisher, frame, frame_id in zip(self._cameras, frames, CAMERA_FRAMES):
            pixels = np.ascontiguousarray(frame, dtype=np.uint8)
            msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding="rgb8", step=pixels.shape[1] * 3,
                        data=pixels.tobytes())
            msg.header.stamp, msg.header.frame_id = stamp, frame_id
            publisher.publish(msg)
        return _stamp_text(stamp)

    # ------------------------------------------------------------------ what it receives

    def _on_chunk(self, msg: Float32MultiArray) -> None:
        dims = [d.size for d in msg.layout.dim]
        chunk = np.asarray(msg.data, dtype=np.float32)
        if len(dims) == 2 and chunk.size == dims[0] * dims[1]:
            chunk = chunk.reshape(dims)
        with self._cond:
            self._chunks.append(chunk)
            self._last_command_at = time.monotonic()
            self._cond.notify_all()

    def _on_info(self, msg: DiagnosticStatus) -> None:
        with self._cond:
            self._infos.append({kv.key: kv.value for kv in msg.values})
            self._cond.notify_all()

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith("lightvla_node: model"):
                self.node_model_status = (status.level, status.message)

    def _pairs(self) -> list[tuple[np.ndarray, dict[str, str]]]:
        """Received chunks matched with their ``chunk_info`` by the payload checksum (arrival order across the two
        topics is not guaranteed); unmatched ones wait for their partner. Call with the lock held."""
        pairs, unmatched = [], deque(maxlen=self._infos.maxlen)
        checksums = [chunk_checksum(chunk) for chunk in self._chunks]
        for info in self._infos:
            if info.get("chunk_crc32") in checksums:
                index = checksums.index(info["chunk_crc32"])
                pairs.append((self._chunks[index], info))
                del self._chunks[index], checksums[index]
            else:
                unmatched.append(info)
        self._infos = unmatched
        return pairs

    def _on_twist(self, msg: TwistStamped) -> None:
        linear, angular = msg.twist.linear, msg.twist.angular
        with self._cond:
            self._last_command_at = time.monotonic()
            self._twist = (msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec,
                           np.array([linear.x, linear.y, linear.z]), np.array([angular.x, angular.y, angular.z]))

    def _on_gripper(self, msg: Float64) -> None:
        with self._cond:
            self._last_command_at = time.monotonic()
            self._gripper = float(msg.data)

    def held_command(self) -> np.ndarray:
        """The env command a streaming driver executes now: the last twist unless it is older than two periods
        (then no motion), and the last gripper command."""
        with self._cond:
            twist, gripper = self._twist, self._gripper
        if twist is None or self._now_ns() - twist[0] > 2 * self._dt_ns:
            return twist_command(np.zeros(3), np.zeros(3), gripper, self.dt)
        return twist_command(twist[1], twist[2], gripper, self.dt)

    def drain_chunks(self) -> list[tuple[np.ndarray, dict[str, str]]]:
        """Every (chunk, info) received and not yet taken (the ``stream`` driver's record of the queries)."""
        with self._cond:
            return self._pairs()

    def reset_commands(self) -> None:
        """Forget the streamed commands and chunks of the previous episode."""
        with self._cond:
            self._twist, self._gripper = None, 1.0
            self._chunks.clear()
            self._infos.clear()

    def seconds_since_command(self) -> float:
        """Wall seconds since the last twist, gripper or chunk arrived (or since this node started)."""
        with self._cond:
            return time.monotonic() - self._last_command_at

    def wait_chunk(self, stamp: str, republish: Callable[[], Any], alive: Callable[[], str]) -> tuple[np.ndarray,
                                                                                                        dict[str, str]]:
        """The chunk computed from the observation stamped ``stamp`` (the sim clock stands still meanwhile). Chunks
        for other observations are dropped; ``republish()`` sends the observation again every ``republish_s``
        (camera frames travel best effort); ``alive()`` says why lightvla_node can no longer answer, or ''."""
        deadline = time.monotonic() + self.chunk_timeout_s
        next_republish = time.monotonic() + self.republish_s
        with self._cond:
            while True:
                for chunk, info in self._pairs():
                    if info.get("obs_stamp") != stamp:
                        continue
                    if info.get("publish_stamp") != stamp:
                        raise LightVLAError(f"lightvla_node published the chunk for sim time {stamp} at "
                                            f"{info.get('publish_stamp')}: it is not on sim time (start it with "
                                            "use_sim_time:=true, as config/libero_sim.yaml does)")
                    return chunk, info
                reason = alive()
                if reason:
                    raise LightVLAError(reason)
                now = time.monotonic()
                if now >= deadline:
                    raise LightVLAError(f"no action chunk for the observation at sim time {stamp} within "
                                        f"{self.chunk_timeout_s:.0f} s; is lightvla_node active, on use_sim_time, "
                                        "with an instruction? (`lightvla monitor` shows its diagnostics)")
                if now >= next_republish:
                    self.get_logger().info(f"no chunk yet for sim time {stamp}: sending the observation again")
                    self.publish_clock()
                    republish()
                    next_republish = now + self.republish_s
                self._cond.wait(min(deadline, next_republish, now + 1.0) - now)


# What the simulator needs of a running node: the rest of node_parameters() describes the model and is recorded
MATCHED_PARAMETERS = ("use_sim_time", "center_crop", "preprocessing", "camera_topics", "camera_types", "state_source",
                      "state_topic", "state_joint_names", "missing_state", "sync_tolerance", "dt")
RECORDED_PARAMETERS = ("checkpoint", "unnorm_key", "device", "dtype", "pruning", "readout", "execution_mode",
                       "publish_actions")


def running_node_parameters(sim: LiberoSimNode, namespace: str, names: Sequence[str],
                            timeout_s: float = 10.0) -> dict[str, Any]:
    """The values of ``names`` on the running ``<namespace>/lightvla_node`` (``ros2 param get``)."""
    from rclpy.parameter import parameter_value_to_python
    from rclpy.parameter_client import AsyncParameterClient

    client = AsyncParameterClient(sim, f"{namespace}/lightvla_node")
    if not client.wait_for_services(timeout_sec=timeout_s):
        raise LightVLAError(f"no lightvla_node in namespace '{namespace or '/'}' of ROS domain "
                            f"{os.environ.get('ROS_DOMAIN_ID', '0')} answers parameter requests")
    future = client.get_parameters(list(names))
    deadline = time.monotonic() + timeout_s
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not future.done() or future.result() is None:
        raise LightVLAError("lightvla_node did not answer a parameter request")
    return {name: parameter_value_to_python(value) for name, value in zip(names, future.result().values)}


def check_running_node(sim: LiberoSimNode, namespace: str, drive: str) -> dict[str, Any]:
    """Refuse a running node whose parameters do not fit this simulator (the values of config/libero_sim.yaml);
    returns the parameters that describe its model, for the summary."""
    values = running_node_parameters(sim, namespace, MATCHED_PARAMETERS + RECORDED_PARAMETERS)
    wanted = node_parameters("", "", "", "")
    differences = [f"{name} is {values[name]!r}, not {wanted[name]!r}" for name in MATCHED_PARAMETERS
                   if values[name] != wanted[name]]
    if drive == "stream" and not values["publish_actions"]:
        differences.append("publish_actions is false: the stream drive executes the node's twist stream")
    if differences:
        raise LightVLAError("the running lightvla_node does not fit the simulator (start it with "
                            "config/libero_sim.yaml): " + "; ".join(differences))
    return {name: values[name] for name in RECORDED_PARAMETERS}


class NodeBackend:
    """Chunks from ``lightvla_node`` through its topics (see the module docstring). ``alive()`` says why the node can
    no longer answer (its process ended, its model failed), or ''."""

    name = "node"

    def __init__(self, sim: LiberoSimNode, drive: str = "chunk", alive: Callable[[], str] = lambda: "") -> None:
        self._sim = sim
        self._drive = drive
        self._alive = alive
        self._queries: list[Query] = []
        self._next_step_at: float | None = None  # wall time of the next streamed step

    def start_task(self, instruction: str) -> None:
        self._sim.set_instruction(instruction)

    def start_episode(self) -> None:
        """Streamed: the node stops and forgets its queue (an empty instruction), then gets the task again, so no
        command of the previous episode reaches this one."""
        if self._drive != "stream":
            return
        sim, instruction = self._sim, self._sim.instruction
        sim.set_instruction("")
        sim.reset_commands()
        sim.set_instruction(instruction)
        self._next_step_at = None

    def act(self, frames: list[np.ndarray], state: np.ndarray) -> np.ndarray:
        sim = self._sim
        start = time.perf_counter()

        def send() -> str:
            sim.set_instruction(sim.instruction)  # a node started after the task began has not heard it yet
            return sim.observe(frames, state)

        stamp = send()
        chunk, info = sim.wait_chunk(stamp, send, self._alive)
        round_trip_ms = (time.perf_counter() - start) * 1000.0
        self._queries.append(Query(chunk, float(info.get("latency_ms", "nan")), round_trip_ms,
                                   int(info.get("kept_tokens", 0)), int(info.get("total_tokens", 0))))
        return chunk

    def env_stepped(self) -> None:
        self._sim.advance()

    def stream_command(self, frames: list[np.ndarray], state: np.ndarray) -> np.ndarray:
        sim = self._sim
        sim.observe(frames, state)
        now = time.monotonic()
        if self._next_step_at is None or self._next_step_at < now - sim.dt:  # a new episode, or the sim fell behind
            self._next_step_at = now
        self._next_step_at += sim.dt / sim.real_time_factor
        time.sleep(max(0.0, self._next_step_at - time.monotonic()))
        reason = self._alive()
        if not reason and sim.seconds_since_command() > sim.chunk_timeout_s:
            reason = (f"no ee_twist, gripper or action_chunk from lightvla_node for {sim.chunk_timeout_s:.0f} s: "
                      "is it active, on use_sim_time, with publish_actions true?")
        if reason:
            raise LightVLAError(reason)
        return sim.held_command()

    def take_queries(self) -> list[Query]:
        if self._drive == "stream":  # every chunk the node published is a query (no round trip: nobody waited)
            self._queries += [Query(chunk, float(info.get("latency_ms", "nan")), None, int(info.get("kept_tokens", 0)),
                                    int(info.get("total_tokens", 0))) for chunk, info in self._sim.drain_chunks()]
        queries, self._queries = self._queries, []
        return queries


class SpinThread:
    """rclpy initialised and ``node`` spun in a background thread while the caller drives the simulator."""

    def __init__(self, node_factory: Any, args: list[str] | None = None) -> None:
        rclpy.init(args=args)
        self.node = node_factory()
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True, name="libero-sim-spin")
        self._thread.start()

    def close(self) -> None:
        self._executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown()
        self._thread.join(timeout=5.0)


def _die_with_parent() -> None:
    """In the child: SIGTERM when the evaluation dies, so a killed run leaves no node holding the GPU (Linux)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class NodeProcess:
    """A ``lightvla_node`` started for the evaluation, with its parameters in a file beside the results."""

    def __init__(self, parameters: dict[str, Any], namespace: str, params_file: Path, log_file: Path) -> None:
        params_file.parent.mkdir(parents=True, exist_ok=True)
        params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": parameters}}, sort_keys=False))
        self.namespace = namespace
        self.log_file = log_file
        self._log = open(log_file, "w", encoding="utf-8")
        command = [sys.executable, "-m", "lightvla_ros.ros.node", "--ros-args", "--params-file", str(params_file)]
        if namespace:
            command += ["-r", f"__ns:={namespace}"]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=os.environ.copy(),
                                        preexec_fn=_die_with_parent if sys.platform == "linux" else None)

    def alive(self, sim: LiberoSimNode | None = None) -> str:
        """Why this node can no longer answer, or '': its process ended, or its model failed to load (diagnostics)."""
        if self.process.poll() is not None:
            return f"lightvla_node exited with status {self.process.returncode}; {self._log_tail()}"
        if sim is not None and sim.node_model_status is not None and sim.node_model_status[0] == ERROR_LEVEL:
            return f"lightvla_node: model: {sim.node_model_status[1]}; {self._log_tail()}"
        return ""

    def wait_active(self, sim: LiberoSimNode, timeout_s: float) -> None:
        """Until the node reports the lifecycle state ``active`` (model loaded and warmed up)."""
        client = sim.create_client(GetState, f"{self.namespace.rstrip('/')}/lightvla_node/get_state")
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                reason = self.alive(sim)
                if reason:
                    raise LightVLAError(reason)
                if client.wait_for_service(timeout_sec=0.5):
                    future = client.call_async(GetState.Request())
                    end = time.monotonic() + 5.0
                    while not future.done() and time.monotonic() < end:
                        time.sleep(0.02)
                    if future.done() and future.result() is not None and future.result().current_state.label == "active":
                        return
                time.sleep(0.5)
        finally:
            sim.destroy_client(client)
        raise LightVLAError(f"lightvla_node did not become active within {timeout_s:.0f} s; {self._log_tail()}")

    def _log_tail(self, lines: int = 5) -> str:
        self._log.flush()
        tail = self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        return f"its log ({self.log_file}) ends with:\n" + "\n".join(tail)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGINT (the node's clean shutdown), then SIGKILL."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

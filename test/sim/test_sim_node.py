"""The simulator as a ROS 2 robot: ``lightvla_node`` (the real node, the tiny fixture checkpoint, on sim time) drives
the LIBERO stand-in through its topics and returns exactly the chunks the in-process policy returns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sim_support import GOLDEN_STATE, FakeLiberoTask, require_libero

from lightvla_ros.sim.evaluation import EvalSettings, PolicyBackend, evaluate
from lightvla_ros.sim.libero_protocol import SETTLE_STEPS

pytestmark = [pytest.mark.ros, pytest.mark.slow]
UNNORM_KEY = "libero_spatial_no_noops"
STEPS = 20


@pytest.fixture(scope="module")
def tiny() -> Path:
    from ros_support import isolate_ros_environment, tiny_checkpoint

    isolate_ros_environment()
    path = tiny_checkpoint()
    if path is None:
        pytest.skip("the fixture checkpoint ../shared/fixtures/oft-tiny-libero is absent (set LIGHTVLA_FIXTURES)")
    return path


@pytest.fixture(scope="module")
def node_backend(tiny, tmp_path_factory):
    """The simulator node in this process and lightvla_node in its own, as ``eval-libero --backend node`` runs them."""
    from lightvla_ros.sim import ros_sim

    out = tmp_path_factory.mktemp("node")
    spin = ros_sim.SpinThread(lambda: ros_sim.LiberoSimNode(chunk_timeout_s=120.0))
    node = ros_sim.NodeProcess(ros_sim.node_parameters(str(tiny), UNNORM_KEY, "cpu", "float32", cpu_threads=1), "",
                               out / "lightvla_node.yaml", out / "lightvla_node.log")
    try:
        node.wait_active(spin.node, 240.0)
        yield ros_sim.NodeBackend(spin.node), spin.node
    finally:
        node.stop()
        spin.close()


class Recording:
    """Keeps every query a backend answered."""

    def __init__(self, backend) -> None:
        self.backend, self.name, self.queries = backend, backend.name, []

    def start_task(self, instruction):
        self.backend.start_task(instruction)

    def start_episode(self):
        self.backend.start_episode()

    def act(self, frames, state):
        return self.backend.act(frames, state)

    def env_stepped(self):
        self.backend.env_stepped()

    def stream_command(self, frames, state):
        return self.backend.stream_command(frames, state)

    def take_queries(self):
        queries = self.backend.take_queries()
        self.queries += queries
        return queries


def run(backend, out: Path) -> tuple[FakeLiberoTask, Recording, dict]:
    tasks: list[FakeLiberoTask] = []

    def open_task(suite_name, task_id):
        tasks.append(FakeLiberoTask(suite_name, task_id, goal_dx=10.0))
        return tasks[-1]

    recording = Recording(backend)
    settings = EvalSettings(suite="libero_spatial", out=out, tasks=(0,), episodes=1, max_steps=STEPS, video="none",
                            backend=backend.name)
    evaluate(settings, open_task, recording, num_tasks=1, progress=False)
    return tasks[0], recording, json.loads((out / "summary.json").read_text())


def test_the_node_returns_the_in_process_chunks_and_the_robot_moves_the_same(tiny, node_backend, tmp_path):
    from lightvla_ros.policy import LightVLAPolicy

    backend, sim = node_backend
    start = sim.steps
    node_task, node_run, node_summary = run(backend, tmp_path / "node")
    policy = LightVLAPolicy.from_checkpoint(tiny, device="cpu", dtype="float32", unnorm_key=UNNORM_KEY,
                                            center_crop=True, num_images=2)
    policy_task, policy_run, _ = run(PolicyBackend(policy), tmp_path / "policy")

    assert len(node_run.queries) == len(policy_run.queries) == 3, "open loop: 8 + 8 + 4 of 20 steps"
    for from_node, in_process in zip(node_run.queries, policy_run.queries):
        assert from_node.chunk.dtype == np.float32 and from_node.chunk.shape == (8, 7)
        np.testing.assert_array_equal(from_node.chunk, in_process.chunk)
        assert from_node.kept_tokens == in_process.kept_tokens and from_node.total_tokens == in_process.total_tokens
        assert from_node.round_trip_ms >= from_node.latency_ms > 0
    assert node_task.commands == policy_task.commands, "the same commands reached the simulator"
    assert len(node_task.commands) == SETTLE_STEPS + STEPS
    assert sim.steps == start + SETTLE_STEPS + STEPS, "/clock advanced one dt per env step"
    assert node_summary["latency_ms_mean"] > 0 and node_summary["settings"]["backend"] == "node"


def deliver(sim, chunk: np.ndarray, obs_stamp: str, publish_stamp: str | None = None) -> None:
    """What lightvla_node sends for one observation: the chunk, then its chunk_info (checksum included)."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    from lightvla_ros.ros.messages import chunk_checksum, chunk_msg

    values = {"obs_stamp": obs_stamp, "publish_stamp": publish_stamp or obs_stamp, "steps": str(len(chunk)),
              "dims": str(chunk.shape[1]), "chunk_crc32": chunk_checksum(chunk)}
    sim._on_chunk(chunk_msg(chunk))
    sim._on_info(DiagnosticStatus(values=[KeyValue(key=k, value=v) for k, v in values.items()]))


def test_only_the_chunk_for_the_observation_waited_for_is_executed(node_backend):
    """Chunks computed from other observations (an older frame, a repeat) are dropped, whatever order the chunks and
    their infos arrive in; a chunk published on the wall clock, a dead node, or no answer at all end with an error that
    says what to check."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    from lightvla_ros.model.errors import LightVLAError
    from lightvla_ros.ros.messages import chunk_checksum, chunk_msg

    _, sim = node_backend
    older, mine = np.full((2, 7), 0.5, np.float32), np.full((2, 7), 0.25, np.float32)
    sim._on_chunk(chunk_msg(older))
    sim._on_chunk(chunk_msg(mine))
    for chunk, stamp in ((mine, "9.000000000"), (older, "0.500000000")):  # infos in the other order
        values = {"obs_stamp": stamp, "publish_stamp": stamp, "chunk_crc32": chunk_checksum(chunk)}
        sim._on_info(DiagnosticStatus(values=[KeyValue(key=k, value=v) for k, v in values.items()]))
    chunk, info = sim.wait_chunk("9.000000000", lambda: None, lambda: "")
    np.testing.assert_array_equal(chunk, mine)

    deliver(sim, mine, "10.000000000", publish_stamp="1796040000.123000000")
    with pytest.raises(LightVLAError, match="not on sim time .*use_sim_time:=true"):
        sim.wait_chunk("10.000000000", lambda: None, lambda: "")
    with pytest.raises(LightVLAError, match="lightvla_node exited with status 1"):
        sim.wait_chunk("11.000000000", lambda: None, lambda: "lightvla_node exited with status 1")
    saved, sim.chunk_timeout_s = sim.chunk_timeout_s, 0.3
    try:
        with pytest.raises(LightVLAError, match="no action chunk for the observation at sim time 1.000000000 .*"
                                                "is lightvla_node active, on use_sim_time"):
            sim.wait_chunk("1.000000000", lambda: None, lambda: "")
    finally:
        sim.chunk_timeout_s = saved


def test_the_packaged_parameter_file_is_what_eval_libero_starts_the_node_with():
    import yaml

    from lightvla_ros.sim.ros_sim import node_parameters

    shipped = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "libero_sim.yaml").read_text())
    assert shipped["/**/lightvla_node"]["ros__parameters"] == node_parameters("", "", "auto", "auto")


def set_node_parameters(sim, **values) -> None:
    """``ros2 param set`` on the running lightvla_node (its run-time parameters)."""
    import time

    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    client = AsyncParameterClient(sim, "lightvla_node")
    assert client.wait_for_services(timeout_sec=10.0)
    future = client.set_parameters([Parameter(name, value=value) for name, value in values.items()])
    deadline = time.monotonic() + 10.0
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert future.done() and all(r.successful for r in future.result().results), future.result()


def test_streamed_drive_executes_the_nodes_twists_and_gripper_as_the_chunks_say(node_backend, tmp_path):
    """With the node's actuation on, the simulator executes the twist and gripper stream of the node's own scheduler:
    every executed motion is a chunk row converted twice (row -> twist by the node, twist -> command by the driver)."""
    from lightvla_ros.ros.core.chunks import delta_to_twist
    from lightvla_ros.sim import ros_sim
    from lightvla_ros.sim.libero_protocol import OSC_ANGULAR_SCALE, OSC_LINEAR_SCALE, twist_command

    _, sim = node_backend
    set_node_parameters(sim, publish_actions=True, execution_mode="open_loop")
    saved, sim.real_time_factor = sim.real_time_factor, 0.25
    task = FakeLiberoTask(goal_dx=10.0)
    recording = Recording(ros_sim.NodeBackend(sim, drive="stream"))
    try:
        settings = EvalSettings(suite="libero_spatial", out=tmp_path, tasks=(0,), episodes=1, max_steps=30,
                                video="none", backend="node", drive="stream")
        report = evaluate(settings, lambda suite_name, task_id: task, recording, num_tasks=1, progress=False)
    finally:
        sim.real_time_factor = saved
        set_node_parameters(sim, publish_actions=False)
    record = report.episodes[0]
    assert record.steps == 30 and record.queries == len(recording.queries) >= 2 and record.round_trip_ms_mean is None

    def as_command(row):
        linear, angular = delta_to_twist(row, OSC_LINEAR_SCALE, OSC_ANGULAR_SCALE, 0.05)
        return np.round(twist_command(linear, angular, row[6]), 9)

    planned = {tuple(as_command(row)) for query in recording.queries for row in query.chunk}
    executed = [tuple(np.round(c, 9)) for c in task.commands[SETTLE_STEPS:]]
    moving = [c for c in executed if any(c[:6])]
    assert len(moving) >= 8, f"at least a whole chunk was streamed: {len(moving)} moving steps of 30"
    assert set(moving) <= planned, "each executed motion is a row of a published chunk, scales and gripper included"
    first_chunk = [tuple(as_command(row)) for row in recording.queries[0].chunk]
    start = executed.index(first_chunk[0])
    assert executed[start:start + 8] == first_chunk, "open loop: the first chunk's 8 steps in order, one per period"


LIBERO_STEPS = 16


def test_libero_through_the_node_and_in_process_gives_the_same_chunks_and_the_same_episode(tiny, node_backend,
                                                                                           tmp_path):
    """The CI smoke of the real simulator: libero_spatial task 0, episode 0, a few chunks through both backends."""
    import av

    from lightvla_ros.policy import LightVLAPolicy
    from lightvla_ros.sim.libero_env import LiberoTask

    require_libero()
    backend, _ = node_backend
    policy = LightVLAPolicy.from_checkpoint(tiny, device="cpu", dtype="float32", unnorm_key=UNNORM_KEY,
                                            center_crop=True, num_images=2)
    runs = {}
    for name, chosen in (("node", backend), ("policy", PolicyBackend(policy))):
        seen_states, tasks = [], []
        recording = Recording(chosen)
        act = recording.act
        recording.act = lambda frames, state, act=act: seen_states.append(state) or act(frames, state)

        def open_task(suite_name, task_id):
            # a new env per run: episode 0 is its first reset; the fast reset is exact on this task (test_libero_env)
            tasks.append(LiberoTask(suite_name, task_id, fast_reset=True))
            return tasks[-1]

        settings = EvalSettings(suite="libero_spatial", out=tmp_path / name, tasks=(0,), episodes=1,
                                max_steps=LIBERO_STEPS, video="first", backend=name)
        report = evaluate(settings, open_task, recording, num_tasks=10, progress=False)
        runs[name] = (report.episodes[0], recording.queries, seen_states)

    (node_record, node_queries, node_states), (policy_record, policy_queries, policy_states) = runs["node"], runs["policy"]
    assert len(node_queries) == len(policy_queries) == 2
    for from_node, in_process in zip(node_queries, policy_queries):
        np.testing.assert_array_equal(from_node.chunk, in_process.chunk)
    np.testing.assert_array_equal(np.array(node_states), np.array(policy_states))
    np.testing.assert_allclose(node_states[0], GOLDEN_STATE, atol=1e-5)  # the state after the settle steps
    assert node_record.steps == policy_record.steps == LIBERO_STEPS and not node_record.success
    assert node_record.instruction == "pick up the black bowl between the plate and the ramekin and place it on the plate"
    with av.open(str(tmp_path / "node" / node_record.video)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == LIBERO_STEPS and frames[0].shape == (256, 256, 3)


def test_lightvla_libero_sim_drives_an_already_running_node(node_backend, tmp_path):
    """The simulator's own entry point (``ros2 run lightvla_ros lightvla_libero_sim``) against a running node."""
    import subprocess
    import sys

    require_libero()
    script = Path(sys.executable).with_name("lightvla_libero_sim")
    done = subprocess.run([str(script), "--suite", "libero_spatial", "--tasks", "0", "--episodes", "1", "--max-steps",
                           "8", "--fast-reset", "--video", "none", "--no-progress", "--out", str(tmp_path),
                           "--chunk-timeout", "120"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["episodes"] == 1 and summary["policy_steps"] == 8 and summary["settings"]["backend"] == "node"
    assert summary["kept_tokens_mean"] > 0 and "| 0 | pick up the black bowl" in done.stdout


def test_a_running_node_that_does_not_fit_the_simulator_is_refused(node_backend):
    """``--attach``: the running node's parameters are read and compared with config/libero_sim.yaml's."""
    from lightvla_ros.model.errors import LightVLAError
    from lightvla_ros.sim import ros_sim

    _, sim = node_backend
    recorded = ros_sim.check_running_node(sim, "", "chunk")
    assert recorded["pruning"] == "lightvla" and recorded["checkpoint"].endswith("oft-tiny-libero")
    with pytest.raises(LightVLAError, match="publish_actions is false: the stream drive"):
        ros_sim.check_running_node(sim, "", "stream")
    set_node_parameters(sim, sync_tolerance=0.1)
    try:
        with pytest.raises(LightVLAError, match="does not fit the simulator .*sync_tolerance is 0.1, not 0.01"):
            ros_sim.check_running_node(sim, "", "chunk")
    finally:
        set_node_parameters(sim, sync_tolerance=0.01)

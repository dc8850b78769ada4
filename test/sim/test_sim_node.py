"""The simulator as a ROS 2 robot: ``lightvla_node`` (the real node, the tiny fixture checkpoint, on sim time) drives
the LIBERO stand-in through its topics and returns exactly the chunks the in-process policy returns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sim_support import FakeLiberoTask

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

    def act(self, frames, state):
        return self.backend.act(frames, state)

    def env_stepped(self):
        self.backend.env_stepped()

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
    start = sim.now
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
    assert sim.now == pytest.approx(start + (SETTLE_STEPS + STEPS) * 0.05), "/clock advanced one dt per env step"
    assert node_summary["latency_ms_mean"] > 0 and node_summary["settings"]["backend"] == "node"


def test_only_the_chunk_for_the_observation_waited_for_is_executed(node_backend):
    """Chunks computed from other observations (an older frame, a repeat) are dropped, and waiting for an observation
    nobody answers ends with an error that says what to check."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    from lightvla_ros.model.errors import LightVLAError
    from lightvla_ros.ros.messages import chunk_msg

    _, sim = node_backend
    older, mine = np.full((2, 7), 0.5, np.float32), np.full((2, 7), 0.25, np.float32)
    for chunk, stamp in ((older, "0.500000000"), (mine, "9.000000000")):
        sim._on_chunk(chunk_msg(chunk))
        values = {"obs_stamp": stamp, "steps": "2", "dims": "7"}
        sim._on_info(DiagnosticStatus(values=[KeyValue(key=k, value=v) for k, v in values.items()]))
    chunk, info = sim.wait_chunk("9.000000000", lambda: None)
    np.testing.assert_array_equal(chunk, mine)
    saved, sim.chunk_timeout_s = sim.chunk_timeout_s, 0.3
    try:
        with pytest.raises(LightVLAError, match="no action chunk for the observation at sim time 1.000000000 .*"
                                                "is lightvla_node active, on use_sim_time"):
            sim.wait_chunk("1.000000000", lambda: None)
    finally:
        sim.chunk_timeout_s = saved

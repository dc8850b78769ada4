"""The chunk-execution study (``python -m experiments.chunk_execution``): the simulated robot, the closed loop through
lightvla_node on sim time, the recording of demonstrations, and the metrics of the report."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from ros_support import isolate_ros_environment

from experiments.chunk_execution import reacher
from experiments.chunk_execution.__main__ import build_parser
from experiments.chunk_execution.study import PUBLISHED_REPORT, StudyConfig, metrics

pytestmark = pytest.mark.ros
isolate_ros_environment()


def test_no_run_writes_into_docs_unless_told_to():
    assert StudyConfig(quick=True).report == "build/chunk-execution-quick/chunk-execution.md"
    assert StudyConfig().report == "build/chunk-execution/chunk-execution.md"
    assert StudyConfig(report=PUBLISHED_REPORT).report == "docs/chunk-execution.md"
    args = build_parser().parse_args(["--quick"])
    assert args.out is None and args.report is None


def test_the_entry_point_runs_from_a_checkout():
    result = subprocess.run([sys.executable, "-m", "experiments.chunk_execution", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "--quick" in result.stdout and "docs/chunk-execution.md" in result.stdout


def test_the_expert_reaches_the_wandering_target_and_blind_plans_do_not():
    successes = {"expert": 0, "blind": 0}
    for seed in range(20):
        for kind in successes:
            task = reacher.Reacher(np.random.default_rng(seed))
            plan = reacher.expert_velocity(task.state)
            for _ in range(80):
                task.step(reacher.expert_velocity(task.state) if kind == "expert" else plan)
            successes[kind] += task.succeeded
    assert successes["expert"] == 20 and successes["blind"] <= 4


def test_the_node_turns_an_eef_delta_back_into_the_experts_velocity():
    velocity = np.array([0.25, -0.1])
    delta = reacher.velocity_to_delta(velocity)
    assert delta.shape == (6,) and np.abs(delta).max() <= 1.0
    np.testing.assert_allclose(delta[:2] * reacher.LINEAR_SCALE / reacher.DT, velocity)


def test_metrics_count_jumps_where_chunks_arrive_and_gaps_where_the_robot_holds():
    episodes = [{"seed": 0, "success_step": 4, "inference_calls": 2,
                 "commands": [[0.0, 0.0], [0.4, 0.0], [0.4, 0.0], [0.0, 0.0]],
                 "new_chunk": [True, True, False, False]}]
    m = metrics(episodes)
    assert m["success"] == 1.0 and m["time_to_success"] == pytest.approx(0.4)
    assert m["change_max"] == pytest.approx(1.0) and m["change_mean"] == pytest.approx(2 / 3)
    assert m["jump_mean"] == pytest.approx(0.5)  # the first chunk starts the motion, the second continues it seamlessly
    assert m["gaps"] == pytest.approx(0.5) and m["calls_per_s"] == pytest.approx(5.0)


@pytest.fixture(scope="module")
def expert_loop(tmp_path_factory):
    """lightvla_node in this process on sim time, its policy the expert repeating its command for a whole chunk."""
    from experiments.chunk_execution.loop import ClosedLoop
    from experiments.chunk_execution.sim_node import ExpertPolicy

    with ClosedLoop(lambda settings: ExpertPolicy(), str(tmp_path_factory.mktemp("checkpoint"))) as loop:
        yield loop


def test_closed_loop_through_lightvla_node_reaches_the_target(expert_loop):
    assert expert_loop.configure(0, execution_mode="replace") == ""
    logs = [expert_loop.episode(seed, 80) for seed in range(3)]
    assert all(log.success_step is not None for log in logs)
    for log in logs:
        assert log.steps == log.success_step
        assert log.inference_calls >= log.steps - 2  # replace: a chunk for nearly every frame
        assert np.abs(np.asarray(log.commands[2:])).max() > 0.1


def test_injected_latency_delays_every_chunk_by_that_many_periods_of_sim_time(expert_loop):
    assert expert_loop.configure(3, execution_mode="replace") == ""
    log = expert_loop.episode(7, 30)
    moving = np.flatnonzero(np.linalg.norm(np.asarray(log.commands), axis=1) > 0)
    assert moving[0] == 4  # asked at period 0, returned at period 3, executed from the next tick on
    assert log.inference_calls == pytest.approx(log.steps / 3, abs=1.5)


def test_open_loop_executes_whole_chunks_and_asks_for_the_next_one_only_then(expert_loop):
    assert expert_loop.configure(0, execution_mode="open_loop") == ""
    log = expert_loop.episode(7, 30)
    assert log.inference_calls == pytest.approx(log.steps / 9, abs=1.5)  # 8 steps, then a period to infer and start


def test_demonstrations_recorded_with_lightvla_record_train_on_the_experts_deltas(tmp_path):
    from experiments.chunk_execution.loop import data_config_text, record_demonstrations
    from lightvla_ros.training.data import DataReport
    from lightvla_ros.training.rosbag import read_rosbags

    config = tmp_path / "topics.yaml"
    config.write_text(data_config_text())
    record_demonstrations(tmp_path / "bag", episodes=2, steps=12, seed=3, data_config=config, on_progress=lambda text: None)
    episodes = read_rosbags([tmp_path / "bag"], config, image_size=reacher.IMAGE_SIZE, report=DataReport("bag"))
    assert [len(e) for e in episodes] == [12, 12]
    for episode in episodes:
        expected = np.stack([reacher.velocity_to_delta(reacher.expert_velocity(s)) for s in episode.states])
        np.testing.assert_allclose(episode.actions, expected, atol=1e-5)
        assert episode.images[0][0].shape == (reacher.IMAGE_SIZE, reacher.IMAGE_SIZE, 3)

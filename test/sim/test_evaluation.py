"""The LIBERO evaluation loop, without LIBERO: records, summaries, videos and the checks on what is asked for."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
from PIL import Image
from sim_support import FakeLiberoTask

from lightvla_ros.model.errors import InputError
from lightvla_ros.sim.evaluation import EvalSettings, PolicyBackend, evaluate
from lightvla_ros.sim.libero_protocol import SETTLE_STEPS


class PushRight:
    """A policy stand-in: a chunk of 4 steps of +x (or ``dx``), 3 of 9 tokens kept."""

    num_images = 2

    def __init__(self, dx: float = 1.0) -> None:
        self.dx = dx
        self.calls: list[tuple[list[np.ndarray], str, np.ndarray]] = []

    def predict(self, images, instruction, proprio=None):
        self.calls.append((images, instruction, proprio))
        actions = np.tile(np.array([self.dx, 0, 0, 0, 0, 0, 1.0], np.float32), (4, 1))
        return type("Output", (), {"actions": actions * 1.5, "num_kept": 3, "num_patches": 9})()


def run(tmp_path, policy, **overrides):
    tasks: list[FakeLiberoTask] = []

    def open_task(suite_name, task_id):
        tasks.append(FakeLiberoTask(suite_name, task_id))
        return tasks[-1]

    settings = EvalSettings(**{"suite": "libero_spatial", "out": tmp_path / "eval", "episodes": 2, "max_steps": 12,
                               **overrides})
    return evaluate(settings, open_task, PolicyBackend(policy), num_tasks=3, progress=False), tasks, settings.out


def test_every_episode_is_a_json_line_and_the_summary_counts_successes(tmp_path):
    report, tasks, out = run(tmp_path, PushRight(), tasks=(0, 2))
    lines = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert [(r["task_id"], r["episode"]) for r in lines] == [(0, 0), (0, 1), (2, 0), (2, 1)]
    first = lines[0]
    assert first["success"] is True and first["steps"] == 4, "0.05 m per step, 0.2 m to go"
    assert first["queries"] == 1 and first["kept_tokens_mean"] == 3 and first["total_tokens"] == 9
    assert first["instruction"] == "push the cube to the right" and first["latency_ms_mean"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["successes"] == 4 and summary["success_rate"] == 1.0 and summary["policy_steps"] == 16
    assert [t["task_id"] for t in summary["tasks"]] == [0, 2]
    assert summary["settings"]["suite"] == "libero_spatial" and summary["settings"]["execution_mode"] == "open_loop"
    assert "| 2 | push the cube to the right | 2/2 | 100.0% |" in (out / "summary.md").read_text()
    assert all(task.closed for task in tasks), "each task's simulator is closed after its episodes"


def test_failures_run_the_whole_step_budget(tmp_path):
    report, _, _ = run(tmp_path, PushRight(dx=-1.0), tasks=(1,), episodes=1)
    assert [(r.success, r.steps, r.queries) for r in report.episodes] == [(False, 12, 3)]
    assert "0/1 (0.0%)" in report.markdown()


def test_the_policy_sees_the_rotated_frames_the_float32_state_and_the_task_instruction(tmp_path):
    policy = PushRight()
    run(tmp_path, policy, tasks=(0,), episodes=1)
    images, instruction, state = policy.calls[0]
    assert instruction == "push the cube to the right"
    assert [tuple(image[0, 0]) for image in images] == [(255, 255, 255), (0, 0, 0)], "agentview rotated 180 degrees"
    assert state.dtype == np.float32 and state.shape == (8,), "as the state crosses ROS: float32"


def test_chunks_are_clipped_as_the_node_publishes_them(tmp_path):
    _, tasks, _ = run(tmp_path, PushRight(), tasks=(0,), episodes=1)
    executed = np.array(tasks[0].commands[SETTLE_STEPS:])
    assert executed[:, 0].max() == 1.0, "1.5 from the model, 1.0 on the wire"
    assert set(executed[:, 6]) == {-1.0}, "model gripper 1 (open) is the env's -1"


def test_the_first_episode_of_each_task_is_filmed(tmp_path):
    report, _, out = run(tmp_path, PushRight(dx=-1.0), tasks=(0, 1))
    videos = sorted(p.name for p in (out / "videos").glob("*.mp4"))
    assert videos == ["libero_spatial_task00_ep000.mp4", "libero_spatial_task01_ep000.mp4"]
    assert report.episodes[0].video == "videos/libero_spatial_task00_ep000.mp4" and report.episodes[1].video is None
    with av.open(str(out / "videos" / videos[0])) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 12 and frames[0].shape == (64, 64, 3), "one frame per policy step"
    assert frames[0][:4, :4].mean() > 200, "the rotated view"
    with Image.open(out / "videos" / "libero_spatial_task00_ep000.strip.png") as strip:
        assert strip.size == (8 * 64, 64)


def test_video_all_and_none(tmp_path):
    _, _, out = run(tmp_path, PushRight(), tasks=(0,), video="all")
    assert len(list((out / "videos").glob("*.mp4"))) == 2
    _, _, out = run(tmp_path / "none", PushRight(), tasks=(0,), video="none")
    assert not (out / "videos").exists()


@pytest.mark.parametrize("overrides,message", [
    ({"tasks": (0, 5)}, r"--tasks \[5\]: libero_spatial has tasks 0..2"),
    ({"episodes": 0}, "--episodes must be at least 1"),
    ({"max_steps": 0}, "--max-steps must be at least 1"),
    ({"video": "some"}, "--video must be one of first, all, none"),
    ({"suite": "libero_100"}, "unknown LIBERO suite 'libero_100'"),
])
def test_bad_requests_are_refused_before_anything_runs(tmp_path, overrides, message):
    with pytest.raises(InputError, match=message):
        run(tmp_path, PushRight(), **overrides)


def test_the_step_budget_defaults_to_the_suite(tmp_path):
    assert EvalSettings(suite="libero_10", out=tmp_path).step_budget == 520
    assert EvalSettings(suite="libero_10", out=tmp_path, max_steps=30).step_budget == 30


def test_eval_libero_names_the_statistics_a_checkpoint_lacks_before_starting_anything(tmp_path, capsys):
    from lightvla_ros.cli import main
    from lightvla_ros.model.tiny import make_tiny_checkpoint

    checkpoint = make_tiny_checkpoint(tmp_path / "tiny", seed=0)
    assert main(["eval-libero", "--checkpoint", str(checkpoint), "--suite", "libero_goal", "--out", str(tmp_path)]) == 2
    assert ("no statistics for 'libero_goal' (nor libero_goal_no_noops); it has: tiny_libero"
            in capsys.readouterr().err)
    assert main(["eval-libero", "--checkpoint", str(tmp_path / "absent"), "--suite", "libero_goal"]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--suite", "libero_spatial"], "--checkpoint is required"),
    (["--suite", "libero_spatial", "--backend", "node", "--attach", "--checkpoint", "x"], "leave out --checkpoint"),
    (["--suite", "libero_spatial", "--attach"], "--attach drives a running lightvla_node: it needs --backend node"),
])
def test_eval_libero_refuses_contradictory_options(argv, message, capsys):
    from lightvla_ros.cli import main

    assert main(["eval-libero", *argv]) == 2
    assert message in capsys.readouterr().err


def test_namespaces_are_made_absolute():
    from lightvla_ros.sim.commands import _namespace

    assert [_namespace(t) for t in ("", "robot1", "/robot1", "/a/b/")] == ["", "/robot1", "/robot1", "/a/b"]


def test_an_interrupted_run_still_writes_its_summary(tmp_path):
    class Failing(PushRight):
        def predict(self, images, instruction, proprio=None):
            if len(self.calls) == 1:
                raise RuntimeError("CUDA out of memory")
            return super().predict(images, instruction, proprio)

    with pytest.raises(RuntimeError):
        run(tmp_path, Failing(dx=-1.0), tasks=(0,))
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["interrupted"] == "RuntimeError: CUDA out of memory" and summary["episodes"] == 0
    assert "(interrupted)" in (tmp_path / "eval" / "summary.md").read_text()


def test_more_episodes_than_initial_states_are_refused_before_the_first(tmp_path):
    with pytest.raises(InputError, match="--episodes 6: libero_spatial task 0 has 5 initial states"):
        run(tmp_path, PushRight(), tasks=(0,), episodes=6)

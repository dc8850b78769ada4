"""The authors' LIBERO evaluation protocol, checked without LIBERO: suites, state, camera orientation, gripper
convention and the episode loop (settle steps, whole chunks, step budget) on a scripted stand-in env."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sim_support import GOLDEN_STATE

from lightvla_ros.model.errors import InputError
from lightvla_ros.sim.libero_protocol import (
    NOOP_ACTION,
    SETTLE_STEPS,
    SUITES,
    camera_frames,
    env_action,
    quat2axisangle,
    robot_state,
    run_episode,
    suite,
    unnorm_key,
)


def quat_from_axis_angle(rotation: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(rotation))
    axis = rotation / angle
    return np.array([*(axis * math.sin(angle / 2)), math.cos(angle / 2)])


def test_suites_have_the_authors_step_budgets():
    assert {name: s.max_steps for name, s in SUITES.items()} == {
        "libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
    assert SETTLE_STEPS == 10 and NOOP_ACTION == (0, 0, 0, 0, 0, 0, -1)
    assert suite("libero_goal").max_steps == 300
    with pytest.raises(InputError, match="unknown LIBERO suite 'libero_100'; use one of libero_spatial"):
        suite("libero_100")


def test_unnorm_key_prefers_the_suite_name_then_its_no_noops_dataset():
    assert unnorm_key("libero_spatial", ["libero_spatial_no_noops"]) == "libero_spatial_no_noops"
    assert unnorm_key("libero_spatial", ["libero_spatial", "libero_spatial_no_noops"]) == "libero_spatial"
    with pytest.raises(InputError, match="no statistics for 'libero_goal'.*it has: libero_spatial_no_noops"):
        unnorm_key("libero_goal", ["libero_spatial_no_noops"])


@pytest.mark.parametrize("rotation", [[0.3, -0.2, 0.1], [0.0, 0.0, -1.5], GOLDEN_STATE[3:6]])
def test_quat2axisangle_inverts_the_axis_angle_quaternion(rotation):
    rotation = np.asarray(rotation, dtype=np.float64)
    np.testing.assert_allclose(quat2axisangle(quat_from_axis_angle(rotation)), rotation, atol=1e-9)


def test_quat2axisangle_follows_robosuite_at_the_edges_without_touching_its_input():
    np.testing.assert_array_equal(quat2axisangle([0.0, 0.0, 0.0, 1.0]), np.zeros(3))
    quat = np.array([0.0, 0.0, 1e-9, 1.0000001])  # w past 1 from float noise: clipped, a zero rotation
    np.testing.assert_array_equal(quat2axisangle(quat), np.zeros(3))
    assert quat[3] == 1.0000001
    flipped = -quat_from_axis_angle(np.array([0.0, 0.0, 0.5]))  # the same rotation, negative w: angle 2*pi - 0.5
    np.testing.assert_allclose(quat2axisangle(flipped), [0.0, 0.0, -(2 * math.pi - 0.5)], atol=1e-9)


def test_robot_state_is_position_axis_angle_then_gripper_joints():
    obs = {"robot0_eef_pos": GOLDEN_STATE[:3], "robot0_eef_quat": quat_from_axis_angle(GOLDEN_STATE[3:6]),
           "robot0_gripper_qpos": GOLDEN_STATE[6:]}
    state = robot_state(obs)
    assert state.shape == (8,)
    np.testing.assert_allclose(state, GOLDEN_STATE, atol=1e-9)


def test_both_cameras_are_rotated_180_degrees_third_person_first():
    agentview = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    wrist = agentview + 100
    frames = camera_frames({"agentview_image": agentview, "robot0_eye_in_hand_image": wrist})
    np.testing.assert_array_equal(frames[0], np.rot90(agentview, 2))
    np.testing.assert_array_equal(frames[1], np.rot90(wrist, 2))
    assert frames[0][0, 0].tolist() == agentview[3, 4].tolist() and frames[0].flags.c_contiguous
    agentview[:] = 0  # the simulator reuses its buffers: the frames must not change with them
    assert frames[0].any()


def test_gripper_open_is_minus_one_for_the_env_and_motion_passes_through():
    chunk = np.array([[0.1, -0.2, 0.3, 0.01, -0.02, 0.03, gripper] for gripper in (1.0, 0.0, 0.7, 0.3, 0.5)])
    command = env_action(chunk)
    assert command[:, -1].tolist() == [-1.0, 1.0, -1.0, 1.0, 0.0]
    np.testing.assert_array_equal(command[:, :6], chunk[:, :6])
    assert chunk[0, -1] == 1.0, "the model's actions are left alone"
    assert env_action(chunk[1]).tolist()[-1] == 1.0


class ScriptedEnv:
    """Records what it is told; reports done after ``done_after`` steps (counting the settle steps)."""

    def __init__(self, done_after: int | None = None) -> None:
        self.calls: list[str] = []
        self.commands: list[list[float]] = []
        self.done_after = done_after

    def observation(self) -> dict:
        step = float(len(self.commands))
        image = np.full((8, 8, 3), len(self.commands) % 256, np.uint8)
        image[0, 0] = 255
        return {"agentview_image": image, "robot0_eye_in_hand_image": image, "robot0_eef_pos": [step, 0.0, 0.0],
                "robot0_eef_quat": [0.0, 0.0, 0.0, 1.0], "robot0_gripper_qpos": [0.04, -0.04]}

    def reset(self) -> None:
        self.calls.append("reset")

    def set_init_state(self, state) -> dict:
        self.calls.append(f"set_init_state {state}")
        return self.observation()

    def step(self, command: list[float]):
        assert isinstance(command, list) and len(command) == 7
        self.commands.append(command)
        return self.observation(), 0.0, self.done_after is not None and len(self.commands) >= self.done_after, {}


def chunk_policy(queries: list[np.ndarray], chunk_len: int = 8):
    def act(frames, state):
        assert len(frames) == 2 and frames[0][-1, -1].tolist() == [255, 255, 255], "rotated frames"
        queries.append(state)
        return np.array([[len(queries), i, 0, 0, 0, 0, 1.0] for i in range(chunk_len)])
    return act


def test_episode_settles_then_executes_whole_chunks_until_the_step_budget():
    env, queries, seen = ScriptedEnv(), [], []
    result = run_episode(env, "init-0", chunk_policy(queries), max_steps=20, on_frame=seen.append)
    assert env.calls == ["reset", "set_init_state init-0"]
    assert env.commands[:SETTLE_STEPS] == [list(NOOP_ACTION)] * SETTLE_STEPS
    executed = np.array(env.commands[SETTLE_STEPS:])
    assert len(executed) == 20 and len(seen) == 20
    assert executed[:, 0].tolist() == [1] * 8 + [2] * 8 + [3] * 4, "a new query only once the chunk is used up"
    assert executed[:, 1].tolist() == list(range(8)) * 2 + list(range(4)), "in chunk order"
    assert set(executed[:, -1]) == {-1.0}, "model 'open' reaches the env as -1"
    assert [q[0] for q in queries] == [SETTLE_STEPS, SETTLE_STEPS + 8, SETTLE_STEPS + 16], "state of the step queried"
    assert result.success is False and result.steps == 20 and result.queries == 3


def test_episode_succeeds_on_the_step_the_env_reports_done():
    env = ScriptedEnv(done_after=SETTLE_STEPS + 11)
    result = run_episode(env, "init-3", chunk_policy([]), max_steps=220)
    assert result.success and result.steps == 11 and result.queries == 2
    early = run_episode(ScriptedEnv(done_after=3), "init-3", chunk_policy([]), max_steps=5)
    assert early.success and early.steps == 1, "done during the settle steps is ignored, as the authors do"


def test_episode_refuses_a_policy_that_returns_no_chunk():
    with pytest.raises(InputError, match=r"shape \(0,\)"):
        run_episode(ScriptedEnv(), "init-0", lambda frames, state: [], max_steps=5)


def test_replace_mode_queries_every_step_and_executes_the_first_row_of_each_chunk():
    env, queries = ScriptedEnv(), []
    result = run_episode(env, "init-0", chunk_policy(queries), max_steps=5, execution_mode="replace")
    executed = np.array(env.commands[SETTLE_STEPS:])
    assert result.queries == 5 and executed[:, 0].tolist() == [1, 2, 3, 4, 5] and executed[:, 1].tolist() == [0] * 5


def test_temporal_ensemble_averages_every_prediction_for_a_step():
    env, queries = ScriptedEnv(), []
    run_episode(env, "init-0", chunk_policy(queries), max_steps=3, execution_mode="temporal_ensemble")
    executed = np.array(env.commands[SETTLE_STEPS:])
    # step 2 was predicted by chunk 1 (its row 1) and chunk 2 (its row 0): the weighted mean of ids 1 and 2
    assert executed[0, 0] == 1 and 1 < executed[1, 0] < 2 and 1 < executed[2, 0] < 3

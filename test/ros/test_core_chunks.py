"""Chunk trimming, velocities, clipping, MultiArray layout and EEF integration."""

import math

import numpy as np
import pytest

from lightvla_ros.ros.core import chunks


def test_elapsed_steps_and_trimming():
    # a step is trimmed once its interval has ended; the step in progress is still executed
    assert chunks.elapsed_steps(10.0, 10.0, 0.05) == 0
    assert chunks.elapsed_steps(10.0, 10.01, 0.05) == 0
    assert chunks.elapsed_steps(10.0, 10.05, 0.05) == 1
    assert chunks.elapsed_steps(10.0, 10.1, 0.05) == 2
    assert chunks.elapsed_steps(10.0, 10.0 + 7.5 * 0.05, 0.05) == 7  # the 8th step of a chunk still runs
    assert chunks.elapsed_steps(10.0, 10.0 + 8 * 0.05, 0.05) == 8  # now all 8 have passed: stale
    assert chunks.elapsed_steps(10.0, 9.0, 0.05) == 0  # clock skew never adds steps
    with pytest.raises(ValueError):
        chunks.elapsed_steps(0.0, 1.0, 0.0)


def test_velocities_end_at_rest():
    positions = np.array([[0.0], [1.0], [3.0], [6.0]])
    vel = chunks.fill_velocities(positions, 0.5)
    np.testing.assert_allclose(vel[:, 0], [2.0, 3.0, 5.0, 0.0])
    assert chunks.fill_velocities(positions[:1], 0.5).tolist() == [[0.0]]


def test_clip_and_finite():
    actions = np.array([[2.0, -3.0], [0.5, 0.0]], dtype=np.float32)
    result = chunks.clip_actions(actions, [-1.0, -1.0], [1.0, 1.0])
    assert result.clipped_elements == 2 and result.actions.max() == 1.0
    assert chunks.clip_actions(actions, [], []).clipped_elements == 0
    assert chunks.all_finite(actions)
    assert not chunks.all_finite(np.array([np.nan]))
    assert not chunks.all_finite(np.array([np.inf]))


def test_validate_limits():
    assert chunks.validate_limits([-1.0] * 7, [1.0] * 7, 7) == ''
    assert chunks.validate_limits([], [], 7) == ''
    assert 'action_upper' in chunks.validate_limits([-1.0], [1.0, 2.0], 7)
    assert '7 action' in chunks.validate_limits([-1.0] * 6, [1.0] * 6, 7)
    assert 'dimension' in chunks.validate_limits([1.0, 0.0], [0.0, 1.0], 2)


def test_multiarray_layout_is_row_major():
    layout = chunks.multiarray_layout((8, 7), ('steps', 'dims'))
    assert layout == [('steps', 8, 56), ('dims', 7, 7)]
    data = np.arange(56).reshape(8, 7)
    flat = data.reshape(-1)
    for step, dim in [(0, 0), (3, 4), (7, 6)]:
        assert flat[chunks.multiarray_index(layout, (step, dim))] == data[step, dim]
    with pytest.raises(IndexError):
        chunks.multiarray_index(layout, (8, 0))


def test_eef_integration_and_twist():
    deltas = np.zeros((2, 7))
    deltas[:, 0] = 1.0
    deltas[:, 5] = 1.0
    poses = chunks.integrate_eef_deltas(deltas, linear_scale=0.05, angular_scale=math.pi / 4)
    assert len(poses) == 3
    np.testing.assert_allclose(poses[-1][0], [0.1, 0.0, 0.0])
    # two 45-degree yaw steps = 90 degrees about z
    half = math.pi / 4
    np.testing.assert_allclose(poses[-1][1], [0.0, 0.0, math.sin(half), math.cos(half)],
                               atol=1e-9)
    linear, angular = chunks.delta_to_twist(deltas[0], 0.05, 0.5, 0.05)
    np.testing.assert_allclose(linear, [1.0, 0.0, 0.0])
    np.testing.assert_allclose(angular, [0.0, 0.0, 10.0])


@pytest.mark.parametrize('rotvec', [[0.3, -0.2, 0.9], [math.pi * 0.99, 0, 0], [0, 2.5, 0],
                                    [0, 0, -3.0]])
def test_quaternion_matches_matrix(rotvec):
    rot = chunks.rotvec_to_matrix(np.array(rotvec))
    x, y, z, w = chunks.matrix_to_quaternion(rot)
    rebuilt = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    np.testing.assert_allclose(rebuilt, rot, atol=1e-9)

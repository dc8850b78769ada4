"""Latest-frame store, multi-camera matching, and state conversion."""

import numpy as np
import pytest

from lightvla_ros.ros.core.frames import FrameSet, FrameStore
from lightvla_ros.ros.core.state import (
    StateError,
    StateSample,
    StateStore,
    check_state,
    state_from_array,
    state_from_joint_state,
)


def test_matched_set_uses_each_frame_once():
    store = FrameStore(2)
    store.put(0, 'a0', 10.00, 10.01, 1.0)
    assert 'camera(s) 1' in store.take(10.02, 0.1, 1.0)
    store.put(1, 'b0', 10.03, 10.04, 1.0)
    taken = store.take(10.05, 0.1, 1.0)
    assert isinstance(taken, FrameSet)
    assert [f.msg for f in taken.frames] == ['a0', 'b0']
    assert taken.obs_stamp == 10.00 and taken.spread == pytest.approx(0.03)
    assert isinstance(store.take(10.06, 0.1, 1.0), str)  # nothing fresh left
    assert [c.used for c in store.counters] == [1, 1]


def test_overwrites_count_as_drops_only_while_active():
    store = FrameStore(1)
    store.put(0, 'x', 1.0, 1.0, 1.0)
    store.put(0, 'y', 1.1, 1.1, 1.0)
    assert store.counters[0].dropped == 1
    store.active = False
    store.put(0, 'z', 1.2, 1.2, 1.0)
    assert store.counters[0].dropped == 1
    assert store.take(1.25, 0.1, 1.0).frames[0].msg == 'z'


def test_stale_frames_are_never_used():
    store = FrameStore(1)
    store.put(0, 'old', 5.0, 5.0, 1.0)
    assert isinstance(store.take(7.0, 0.1, 1.0), str)
    assert store.counters[0].stale == 1
    assert isinstance(store.take(7.0, 0.1, 1.0), str)


def test_stamp_mismatch_drops_the_older_frame():
    store = FrameStore(2)
    store.put(0, 'a', 10.0, 10.0, 1.0)
    store.put(1, 'b', 10.5, 10.5, 1.0)
    reason = store.take(10.6, 0.1, 1.0)
    assert 'differ by 500 ms' in reason
    store.put(0, 'a2', 10.52, 10.52, 1.0)
    assert [f.msg for f in store.take(10.6, 0.1, 1.0).frames] == ['a2', 'b']


def test_unstamped_frames_use_arrival_time():
    store = FrameStore(1)
    store.put(0, 'x', 0.0, 42.0, 1.0)
    frame = store.take(42.1, 0.1, 1.0).frames[0]
    assert frame.stamp == 42.0 and not frame.stamped and store.counters[0].unstamped == 1


def test_a_resent_frame_set_is_not_taken_again():
    store = FrameStore(2)
    store.put(0, 'a', 10.0, 10.0, 1.0)
    store.put(1, 'b', 10.0, 10.0, 1.0)
    assert isinstance(store.take(10.01, 0.1, 1.0), FrameSet)
    store.put(0, 'a again', 10.0, 12.0, 1.0)  # a lockstep simulator re-sends while the model runs
    store.put(1, 'b again', 10.0, 12.0, 1.0)
    assert 'camera(s) 0, 1' in store.take(10.02, 0.1, 1.0)
    assert [c.duplicates for c in store.counters] == [1, 1] and [c.used for c in store.counters] == [1, 1]
    assert [c.received for c in store.counters] == [2, 2] and store.counters[0].last_received == 12.0
    assert store.counters[0].last_skew == 0.0  # a re-send says nothing about the camera clock


def test_a_resent_frame_leaves_the_waiting_one_in_place_and_is_no_drop():
    store = FrameStore(1)
    store.put(0, 'first', 10.0, 10.0, 1.0)
    store.put(0, 'echo', 10.0, 10.1, 1.0)
    store.put(0, 'late', 9.9, 10.1, 1.0)  # out of order
    assert store.counters[0].duplicates == 2 and store.counters[0].dropped == 0
    assert store.take(10.2, 0.1, 1.0).frames[0].msg == 'first'


def test_a_newer_frame_is_taken_after_a_used_one():
    store = FrameStore(1)
    store.put(0, 'x', 10.0, 10.0, 1.0)
    store.take(10.01, 0.1, 1.0)
    store.put(0, 'y', 10.05, 10.05, 1.0)
    assert store.take(10.06, 0.1, 1.0).frames[0].msg == 'y'
    assert store.counters[0].duplicates == 0 and store.counters[0].used == 2


def test_unstamped_frames_are_never_duplicates():
    store = FrameStore(1)
    for arrival in (5.0, 5.1):
        store.put(0, arrival, 0.0, arrival, 1.0)
        assert store.take(arrival, 0.1, 1.0).frames[0].msg == arrival
    assert store.counters[0].duplicates == 0


def test_stamps_that_go_back_further_than_max_age_are_a_restart():
    """A simulator restarted or a looping bag: its new frames are used at once, not after the old stamps."""
    store = FrameStore(1)
    store.put(0, 'before', 500.0, 500.0, 1.0)
    store.take(500.0, 0.1, 1.0)
    store.put(0, 'restarted', 3.0, 3.0, 1.0)
    assert store.take(3.0, 0.1, 1.0).frames[0].msg == 'restarted'
    store.put(0, 'resent', 3.0, 3.5, 1.0)
    store.put(0, 'next', 3.1, 3.6, 1.0)
    assert store.take(3.6, 0.1, 1.0).frames[0].msg == 'next'
    assert store.counters[0].duplicates == 1


def test_stamps_that_go_back_with_the_node_clock_are_a_restart():
    """A bag shorter than max_age played with --loop --clock: each pass goes back less than max_age."""
    store = FrameStore(1)
    store.put(0, 'first pass', 100.5, 100.5, 1.0)
    store.take(100.5, 0.1, 1.0)
    store.put(0, 'second pass', 100.1, 100.1, 1.0)
    assert store.take(100.1, 0.1, 1.0).frames[0].msg == 'second pass'
    assert store.counters[0].duplicates == 0


def test_rate_decays_when_silent():
    store = FrameStore(1)
    for i in range(11):
        store.put(0, i, i * 0.1, i * 0.1, 1.0)
    assert store.counters[0].rate(1.0) == pytest.approx(10.0)
    assert store.counters[0].rate(10.0) < 1.2


def test_state_conversions():
    vec = state_from_joint_state(['a', 'b', 'c'], [1.0, 2.0, 3.0], ['c', 'a'])
    np.testing.assert_array_equal(vec, [3.0, 1.0])
    np.testing.assert_array_equal(state_from_joint_state(['a'], [1.0], []), [1.0])
    with pytest.raises(StateError, match='lacks'):
        state_from_joint_state(['a'], [1.0], ['z'])
    with pytest.raises(StateError, match='names'):
        state_from_joint_state(['a', 'b'], [1.0], [])
    np.testing.assert_array_equal(state_from_array([1, 2, 3], [2, 0]), [3.0, 1.0])
    with pytest.raises(StateError, match='out of range'):
        state_from_array([1, 2], [5])
    with pytest.raises(StateError, match='NaN'):
        check_state(np.array([1.0, np.nan]), 2)
    with pytest.raises(StateError, match='expects 3'):
        check_state(np.zeros(2), 3)


def test_state_store_rejects_and_clears():
    store = StateStore()
    store.put(np.ones(2), 1.0, 2)
    assert store.latest().stamp == 1.0
    with pytest.raises(StateError):
        store.put(np.array([np.inf, 0.0]), 2.0, 2)
    store.record_error('state contains NaN or infinite values', 2.0)
    assert store.latest() is None and store.rejected == 1 and store.received == 2


def test_state_older_than_the_frames_by_more_than_the_tolerance_is_not_theirs():
    sample = StateSample(np.zeros(2), stamp=9.65)
    assert sample.lag_behind(10.0, 0.1) == pytest.approx(0.35)
    assert sample.lag_behind(9.7, 0.1) == 0.0   # within the tolerance: used
    assert sample.lag_behind(9.0, 0.1) == 0.0   # newer than the frames: used


def test_restored_frames_are_taken_again_and_count_as_unused():
    store = FrameStore(2)
    store.put(0, 'a', 10.0, 10.0, 1.0)
    store.put(1, 'b', 10.0, 10.0, 1.0)
    taken = store.take(10.01, 0.1, 1.0)
    store.restore(taken)  # their state is still on its way
    assert [c.used for c in store.counters] == [0, 0] and [c.dropped for c in store.counters] == [0, 0]
    again = store.take(10.02, 0.1, 1.0)
    assert [f.msg for f in again.frames] == ['a', 'b'] and again.obs_stamp == 10.0
    assert [c.used for c in store.counters] == [1, 1]


def test_restored_frames_are_taken_again_though_their_resends_are_duplicates():
    store = FrameStore(1)
    store.put(0, 'a', 10.0, 10.0, 1.0)
    taken = store.take(10.01, 0.1, 1.0)
    store.put(0, 'a again', 10.0, 10.02, 1.0)
    store.restore(taken)
    assert store.take(10.03, 0.1, 1.0).frames[0].msg == 'a'
    assert store.counters[0].duplicates == 1 and store.counters[0].used == 1
    store.put(0, 'a again', 10.0, 10.04, 1.0)
    assert isinstance(store.take(10.05, 0.1, 1.0), str)


def test_a_frame_that_arrived_while_waiting_replaces_the_restored_one():
    store = FrameStore(2)
    store.put(0, 'a', 10.0, 10.0, 1.0)
    store.put(1, 'b', 10.0, 10.0, 1.0)
    taken = store.take(10.01, 0.1, 1.0)
    store.put(1, 'b2', 10.05, 10.05, 1.0)
    store.restore(taken)
    assert [c.dropped for c in store.counters] == [0, 1]  # 'b' was never used
    assert [f.msg for f in store.take(10.06, 0.1, 1.0).frames] == ['a', 'b2']


def test_a_state_waits_until_as_new_as_the_frames_and_is_then_used():
    """Frames stamped 10.0 arrive before the state of the same instant (JointState: the stamp is the header's)."""
    frames, states = FrameStore(1), StateStore()
    states.put(np.array([0.0, 0.0]), 9.65, 2)  # the previous state
    frames.put(0, 'frame', 10.0, 10.01, 1.0)
    taken = frames.take(10.02, 0.1, 1.0)
    sample = states.fresh(10.02, 1.0)
    assert sample.lag_behind(taken.obs_stamp, 0.1) == pytest.approx(0.35)
    frames.restore(taken)
    states.put(np.array([1.0, 2.0]), 10.0, 2)
    taken = frames.take(10.03, 0.1, 1.0)
    sample = states.fresh(10.03, 1.0)
    assert taken.frames[0].msg == 'frame' and sample.lag_behind(taken.obs_stamp, 0.1) == 0.0
    np.testing.assert_array_equal(sample.vector, [1.0, 2.0])


def test_an_unstamped_state_counts_from_its_receipt():
    """Float32MultiArray has no header: its stamp is the node-clock time it arrived."""
    states = StateStore()
    states.put(np.ones(2), 10.04, 2)  # received just after frames stamped 10.0
    assert states.fresh(10.05, 1.0).lag_behind(10.0, 0.1) == 0.0
    states.put(np.ones(2), 9.5, 2)  # received half a second before them
    assert states.fresh(10.05, 1.0).lag_behind(10.0, 0.1) == pytest.approx(0.5)


def test_a_state_older_than_max_age_is_missing():
    states = StateStore()
    assert states.fresh(5.0, 1.0) is None
    states.put(np.ones(2), 3.0, 2)
    assert states.fresh(4.0, 1.0) is not None and states.fresh(4.5, 1.0) is None

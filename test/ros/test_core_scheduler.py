"""The chunk scheduler: each execution mode on hand-made chunks and clocks (dt = 0.1 s, times in seconds)."""

import numpy as np
import pytest

from lightvla_ros.ros.core.scheduler import ChunkScheduler, SchedulerSettings

DT = 0.1


def chunk(start: float, steps: int = 4) -> np.ndarray:
    """Rows start, start + 1, ... (one column) so each executed value names its chunk step."""
    return (start + np.arange(steps, dtype=float))[:, None]


def run(scheduler: ChunkScheduler, times: list[float]) -> list[float | str | None]:
    """Tick at each time: the executed value, 'stop', or None."""
    out = []
    for t in times:
        tick = scheduler.tick(t)
        out.append(float(tick.row[0]) if tick.row is not None else ('stop' if tick.stop else None))
    return out


def make(mode: str, **knobs) -> ChunkScheduler:
    return ChunkScheduler(SchedulerSettings(dt=DT, mode=mode, **knobs))


def test_replace_drops_elapsed_steps_and_replaces_the_rest():
    s = make('replace')
    assert s.merge(chunk(0), obs_time=10.0, now=10.15) == 3  # step 0's interval ended; step 1 is running
    assert run(s, [10.16, 10.25]) == [1.0, 2.0]
    # the old step 3 is replaced; the new step 0 (10.2 .. 10.3) is the slot already commanded at 10.25
    assert s.merge(chunk(100), obs_time=10.2, now=10.28) == 3
    assert run(s, [10.3, 10.4, 10.5, 10.6, 10.7]) == [101.0, 102.0, 103.0, 'stop', None]
    assert s.stats.steps_dropped == 1 + 1
    assert s.wants_inference()  # replace infers on every fresh observation


def test_a_tick_after_a_step_interval_ended_skips_it():
    s = make('replace')
    s.merge(chunk(0), obs_time=0.0, now=0.0)
    assert run(s, [0.0, 0.25]) == [0.0, 2.0]  # step 1 (0.1 .. 0.2) passed unexecuted
    assert s.stats.steps_dropped == 1


def test_a_chunk_whose_steps_all_passed_queues_nothing():
    s = make('replace')
    assert s.executable_steps(4, obs_time=0.0, now=0.4) == 0
    assert s.merge(chunk(0), obs_time=0.0, now=0.4) == 0 and len(s) == 0
    assert s.executable_steps(4, obs_time=0.0, now=0.35) == 1  # the last step still runs


def test_open_loop_runs_every_step_then_asks():
    s = make('open_loop')
    assert s.wants_inference()
    assert s.merge(chunk(0), obs_time=0.0, now=0.55) == 4  # late, but executed whole from its arrival
    assert not s.wants_inference()
    assert run(s, [0.6, 0.7, 0.8]) == [0.0, 1.0, 2.0]
    assert not s.wants_inference()
    assert run(s, [0.9]) == [3.0] and s.wants_inference()
    assert run(s, [1.0, 1.1]) == ['stop', None]
    assert s.stats.gaps == 2  # ticks with nothing to execute while the task runs (the robot waits for the model)


@pytest.mark.parametrize('aggregation,expected', [('latest_only', 102.0), ('weighted_average', 0.3 * 2 + 0.7 * 102),
                                                  ('average', 52.0), ('conservative', 0.7 * 2 + 0.3 * 102)])
def test_async_blends_the_overlap_and_asks_at_the_threshold(aggregation, expected):
    s = make('async', async_threshold=0.5, async_aggregation=aggregation)
    s.merge(chunk(0), obs_time=0.0, now=0.0)
    assert run(s, [0.0]) == [0.0] and not s.wants_inference()  # 3 of 4 queued > 0.5 x 4
    assert run(s, [0.1]) == [1.0] and s.wants_inference()  # 2 of 4 queued
    s.merge(chunk(100), obs_time=0.0, now=0.15)  # same time grid: its steps 2 and 3 fall on the queued 2 and 3
    assert s.stats.blends == 2 and len(s) == 2
    executed = run(s, [0.2, 0.3])
    assert executed[0] == pytest.approx(expected)


def test_async_appends_the_steps_beyond_the_queue():
    s = make('async', async_aggregation='latest_only')
    s.merge(chunk(0), obs_time=0.0, now=0.0)
    s.merge(chunk(100), obs_time=0.2, now=0.2)  # steps at 0.2 .. 0.5: two overlap, two are new
    assert s.stats.blends == 2
    assert run(s, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]) == [0.0, 1.0, 100.0, 101.0, 102.0, 103.0]


def test_temporal_ensemble_weights_older_predictions_more():
    s = make('temporal_ensemble', ensemble_decay=1.0)
    s.merge(chunk(0), obs_time=0.0, now=0.0)
    s.merge(chunk(10), obs_time=0.1, now=0.1)  # predicts times 0.1 .. 0.4 again
    s.merge(chunk(20), obs_time=0.2, now=0.2)
    w = np.exp(-np.arange(3.0))
    # time 0.2: chunk 1 step 2 (= 2), chunk 2 step 1 (= 11), chunk 3 step 0 (= 20), oldest first
    assert run(s, [0.2]) == [pytest.approx(float(np.average([2.0, 11.0, 20.0], weights=w)))]
    assert s.wants_inference()


def test_clear_stops_once_and_reports_motion():
    s = make('replace')
    assert s.clear() is False
    s.merge(chunk(0), obs_time=0.0, now=0.0)
    run(s, [0.0])
    assert s.clear() is True and len(s) == 0
    assert run(s, [0.1]) == [None]  # no stop is asked after a clear: the caller already stopped the robot
    assert list(s.stats.executed_per_chunk) == [1]


def test_mode_changes_at_run_time_keep_the_queue():
    s = make('replace')
    s.merge(chunk(0), obs_time=0.0, now=0.0)
    s.configure(SchedulerSettings(dt=DT, mode='open_loop'))
    assert len(s) == 4 and not s.wants_inference()


def test_settings_are_validated():
    with pytest.raises(ValueError, match='execution mode'):
        SchedulerSettings(dt=DT, mode='sometimes')
    with pytest.raises(ValueError, match='aggregation'):
        SchedulerSettings(dt=DT, async_aggregation='median')

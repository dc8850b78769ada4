"""Time-indexed execution of action chunks: which step to command at each control tick, and when to ask for the next
inference.

Step ``k`` of a chunk belongs to the interval ``[obs + k * dt, obs + (k + 1) * dt)`` after its observation; a step whose
interval has ended is never executed. How chunks follow each other is the mode:

* ``open_loop``: the authors' LIBERO protocol. Every step of a chunk is executed, from the tick after it arrives; the
  next inference is asked for once the queue is empty (the robot holds while the model runs).
* ``replace``: infer on every fresh observation; a new chunk replaces what is left of the previous one.
* ``async`` (LeRobot's asynchronous inference): ask for the next chunk once the queue holds at most
  ``async_threshold`` x chunk length steps; steps of the new chunk that fall on queued ones are blended with
  ``async_aggregation`` (the weight of the old value: latest_only 0, weighted_average 0.3, average 0.5,
  conservative 0.7).
* ``temporal_ensemble`` (ACT): infer on every fresh observation and execute, for each step, the average of every
  prediction made for that time, weighted ``exp(-ensemble_decay * i)`` with ``i = 0`` the oldest.

Thread-safe: the inference worker merges chunks, the executor's control timer ticks. ROS-free and clock-agnostic
(times are seconds on the node's clock, sim time included).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from lightvla_ros.ros.core.chunks import elapsed_steps

EXECUTION_MODES = ('replace', 'open_loop', 'async', 'temporal_ensemble')
# async_aggregation -> weight of the queued (old) value when a new chunk's step falls on it
AGGREGATION_OLD_WEIGHT = {'latest_only': 0.0, 'weighted_average': 0.3, 'average': 0.5, 'conservative': 0.7}


@dataclass(frozen=True)
class SchedulerSettings:
    """The execution mode and its knobs (node parameters of the same names)."""

    dt: float
    mode: str = 'replace'
    async_threshold: float = 0.5
    async_aggregation: str = 'weighted_average'
    ensemble_decay: float = 0.01

    def __post_init__(self) -> None:
        if self.mode not in EXECUTION_MODES:
            raise ValueError(f'execution mode {self.mode!r} not in {list(EXECUTION_MODES)}')
        if self.async_aggregation not in AGGREGATION_OLD_WEIGHT:
            raise ValueError(f'async aggregation {self.async_aggregation!r} not in {list(AGGREGATION_OLD_WEIGHT)}')
        if self.dt <= 0:
            raise ValueError('dt must be positive')


@dataclass(frozen=True)
class Tick:
    """What to do at one control tick: execute ``row``, command a stop (``stop``), or nothing (both unset)."""

    row: np.ndarray | None = None
    stop: bool = False


@dataclass
class _Step:
    time: float  # start of the step's interval
    predictions: list[np.ndarray]  # oldest first; one unless temporal_ensemble
    value: np.ndarray


@dataclass
class SchedulerStats:
    """What the diagnostics report about chunk execution."""

    chunks: int = 0
    steps_executed: int = 0
    steps_dropped: int = 0  # their interval ended before they could be executed
    blends: int = 0  # queued steps a new chunk was merged into
    gaps: int = 0  # ticks with nothing to execute while a task was running
    # steps executed between one chunk's arrival and the next's (or a stop), for the last 50 chunks
    executed_per_chunk: deque = field(default_factory=lambda: deque(maxlen=50))


class ChunkScheduler:
    """The queue of upcoming steps, one per ``dt``."""

    def __init__(self, settings: SchedulerSettings) -> None:
        self._lock = threading.Lock()
        self._settings = settings
        self._queue: deque[_Step] = deque()
        self._chunk_len = 0
        self._needs_stop = False
        self._running = False  # a chunk was merged since the last clear: an empty queue is a gap
        self._executed_since_merge = 0
        self._last_time: float | None = None  # time of the last executed step
        self.stats = SchedulerStats()

    @property
    def settings(self) -> SchedulerSettings:
        return self._settings

    def configure(self, settings: SchedulerSettings) -> None:
        """Change mode or knobs at run time; the queue is kept."""
        with self._lock:
            self._settings = settings

    def __len__(self) -> int:
        with self._lock:
            return len(self._queue)

    def executable_steps(self, num_steps: int, obs_time: float, now: float) -> int:
        """How many of a chunk's ``num_steps`` would still be executed if it were merged at ``now``."""
        if self._settings.mode == 'open_loop':
            return num_steps
        return max(0, num_steps - elapsed_steps(obs_time, now, self._settings.dt))

    def merge(self, chunk: np.ndarray, obs_time: float, now: float) -> int:
        """Add a chunk computed from the observation at ``obs_time``; returns how many of its steps are queued."""
        rows = np.asarray(chunk, dtype=np.float64)
        with self._lock:
            cfg = self._settings
            self._close_chunk()
            self.stats.chunks += 1
            self._chunk_len = len(rows)
            start = now if cfg.mode == 'open_loop' else obs_time
            first = 0 if cfg.mode == 'open_loop' else elapsed_steps(obs_time, now, cfg.dt)
            steps = [_Step(start + k * cfg.dt, [rows[k]], rows[k]) for k in range(first, len(rows))]
            if cfg.mode != 'open_loop' and self._last_time is not None:
                # the time slot already commanded this period is not commanded again
                steps = [step for step in steps if step.time > self._last_time + cfg.dt / 2]
            self.stats.steps_dropped += len(rows) - len(steps)
            if cfg.mode in ('open_loop', 'replace'):
                self._queue = deque(steps)
            else:
                self._blend(steps, cfg)
            if steps:
                self._needs_stop = self._running = True
            return len(steps)

    def tick(self, now: float) -> Tick:
        """The step for this control period, else one stop after the last step, else nothing."""
        with self._lock:
            cfg = self._settings
            if cfg.mode != 'open_loop':
                while self._queue and self._queue[0].time + cfg.dt <= now:
                    self._queue.popleft()
                    self.stats.steps_dropped += 1
            if self._queue:
                step = self._queue.popleft()
                self._last_time = step.time
                self._executed_since_merge += 1
                self.stats.steps_executed += 1
                return Tick(row=step.value)
            if self._running:
                self.stats.gaps += 1
            if self._needs_stop:
                self._needs_stop = False
                return Tick(stop=True)
            return Tick()

    def wants_inference(self) -> bool:
        """Whether the mode asks for a new chunk now."""
        with self._lock:
            cfg = self._settings
            if cfg.mode == 'open_loop':
                return not self._queue
            if cfg.mode == 'async':
                return len(self._queue) <= cfg.async_threshold * max(self._chunk_len, 1)
            return True

    def plan(self) -> np.ndarray:
        """The queued rows in execution order (for the planned path or trajectory); (0, 0) when empty."""
        with self._lock:
            return np.array([s.value for s in self._queue]) if self._queue else np.zeros((0, 0))

    def clear(self) -> bool:
        """Drop every queued step and the pending stop; returns whether anything was moving or about to move."""
        with self._lock:
            had_motion = bool(self._queue) or self._needs_stop
            self._close_chunk()
            self._queue.clear()
            self._needs_stop = self._running = False
            self._last_time = None
            return had_motion

    def _blend(self, steps: list[_Step], cfg: SchedulerSettings) -> None:
        """Merge time-aligned steps into the queue (async aggregation or temporal ensemble)."""
        old_weight = AGGREGATION_OLD_WEIGHT[cfg.async_aggregation]
        queued = {round(s.time / cfg.dt): s for s in self._queue}
        for step in steps:
            slot = queued.get(round(step.time / cfg.dt))
            if slot is None:
                self._queue.append(step)
                continue
            self.stats.blends += 1
            new = step.predictions[0]
            if cfg.mode == 'temporal_ensemble':
                slot.predictions.append(new)
                weights = np.exp(-cfg.ensemble_decay * np.arange(len(slot.predictions)))
                slot.value = np.average(np.stack(slot.predictions), axis=0, weights=weights)
            else:
                slot.value = old_weight * slot.value + (1.0 - old_weight) * new
                slot.predictions = [slot.value]
        self._queue = deque(sorted(self._queue, key=lambda s: s.time))

    def _close_chunk(self) -> None:
        """Record how many steps ran since the last chunk arrived (it is being re-planned or stopped)."""
        if self._running:
            self.stats.executed_per_chunk.append(self._executed_since_merge)
        self._executed_since_merge = 0

"""The steps of the current chunk that are still to be executed, handed out one per control tick.

A new chunk replaces what is left of the previous one (its first steps were already trimmed to the time that passed
while the model ran, see :func:`lightvla_ros.ros.core.chunks.elapsed_steps`). When the queue runs dry the streamer
asks once for a stop command, so a velocity-controlled arm does not keep moving on its last command.
Thread-safe: the inference worker fills it, the executor's control timer drains it.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tick:
    """What to do at one control tick: execute ``row``, command a stop (``stop``), or nothing (both unset)."""

    row: np.ndarray | None = None
    stop: bool = False


class ChunkStreamer:
    """Queue of chunk rows with a pending-stop flag."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: deque[np.ndarray] = deque()
        self._needs_stop = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def replace(self, rows: np.ndarray) -> None:
        """Execute ``rows`` from the next tick on, dropping whatever was left of the previous chunk."""
        with self._lock:
            self._rows = deque(np.asarray(rows, dtype=np.float64))
            self._needs_stop = True

    def tick(self) -> Tick:
        """The next row, else one stop after the last row, else nothing."""
        with self._lock:
            if self._rows:
                return Tick(row=self._rows.popleft())
            if self._needs_stop:
                self._needs_stop = False
                return Tick(stop=True)
            return Tick()

    def clear(self) -> bool:
        """Drop every queued row and the pending stop; returns whether anything was moving or about to move."""
        with self._lock:
            had_motion = bool(self._rows) or self._needs_stop
            self._rows.clear()
            self._needs_stop = False
            return had_motion

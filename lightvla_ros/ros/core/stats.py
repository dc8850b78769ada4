"""Small rolling statistics for diagnostics (latency percentiles, rates, pruning numbers)."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np


class RollingWindow:
    """The last ``size`` samples of a value with their times; thread-safe."""

    def __init__(self, size: int = 100) -> None:
        self._lock = threading.Lock()
        self._values: deque[float] = deque(maxlen=size)
        self._times: deque[float] = deque(maxlen=size)
        self.count = 0
        self.last: float | None = None

    def add(self, value: float, now: float) -> None:
        """Record one sample taken at ``now`` (seconds)."""
        with self._lock:
            self._values.append(float(value))
            self._times.append(now)
            self.count += 1
            self.last = float(value)

    def values(self) -> np.ndarray:
        """Copy of the samples in the window."""
        with self._lock:
            return np.asarray(self._values, dtype=np.float64)

    def percentile(self, q: float) -> float | None:
        """The q-th percentile of the window, or None when empty."""
        values = self.values()
        return float(np.percentile(values, q)) if values.size else None

    def summary(self) -> dict[str, float] | None:
        """last/mean/min/max/p50/p95 of the window, or None when empty."""
        values = self.values()
        if not values.size:
            return None
        return {'last': float(values[-1]), 'mean': float(values.mean()),
                'min': float(values.min()), 'max': float(values.max()),
                'p50': float(np.percentile(values, 50)), 'p95': float(np.percentile(values, 95))}

    def rate(self, now: float) -> float:
        """Samples per second over the window, decaying when samples stop coming."""
        with self._lock:
            if len(self._times) < 2:
                return 0.0
            span = now - self._times[0]
            return (len(self._times) - 1) / span if span > 0 else 0.0


@dataclass
class ActionCounters:
    """What happened to the chunks the model produced."""

    published: int = 0
    clipped_chunks: int = 0
    clipped_elements: int = 0
    rejected_nonfinite: int = 0
    stale: int = 0
    discarded_epoch: int = 0
    trimmed_steps_last: int = 0
    last_published_at: float | None = None
    last_fresh_at: float | None = None  # last chunk with steps left to execute
    last_stale_at: float | None = None  # last chunk whose steps had all elapsed
    last_nonfinite_at: float | None = None
    nonfinite_since_last_good: bool = False


@dataclass
class PruningStats:
    """Rolling pruning numbers taken from each prediction."""

    kept: RollingWindow = field(default_factory=RollingWindow)
    keep_ratio: RollingWindow = field(default_factory=RollingWindow)
    flops_saved: RollingWindow = field(default_factory=RollingWindow)
    gflops: RollingWindow = field(default_factory=RollingWindow)
    num_patches: int = 0
    method: str = ''
    max_kept_tokens: int | None = None

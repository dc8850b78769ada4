"""Latest-frame store and multi-camera matching.

Subscription callbacks only put the newest message here (overwriting an unused one counts as a
drop); the inference worker takes a matched set whose stamps agree within a tolerance and are not
too old, and may put it back unused. A frame is used at most once, and stale frames are never used.

A camera never stamps two frames alike, so a stamped frame no newer than the newest one its camera already delivered
is a duplicate (a re-send, a bag played again, a bridge echo) or out of order: it is counted and ignored, and the
same observation is never inferred on twice. Stamps that go back by more than ``max_age``, or that go back with the
node clock, mean the source started over (a simulator restarted, ``ros2 bag play --loop``, a camera clock stepped by
chrony): that frame is accepted and the comparison starts from it.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Frame:
    """One received, still-undecoded camera message."""

    msg: Any
    stamp: float
    received: float
    stamped: bool


@dataclass
class CameraCounters:
    """Per-camera statistics for diagnostics."""

    received: int = 0
    used: int = 0
    dropped: int = 0
    stale: int = 0
    duplicates: int = 0
    decode_errors: int = 0
    unstamped: int = 0
    last_error: str = ''
    last_error_at: float | None = None
    last_received: float | None = None
    last_stamp: float | None = None
    # Node clock minus header stamp of the last stamped frame: positive when stamps lag behind, negative when they
    # are ahead (a camera clock that is off, or one node on sim time and the other not).
    last_skew: float | None = None
    arrivals: deque = field(default_factory=lambda: deque(maxlen=50))

    def rate(self, now: float) -> float:
        """Arrival rate (Hz) over the recent window; it decays towards 0 when the camera stops."""
        if len(self.arrivals) < 2:
            return 0.0
        span = now - self.arrivals[0]
        return (len(self.arrivals) - 1) / span if span > 0 else 0.0


@dataclass(frozen=True)
class FrameSet:
    """Frames from every camera that belong together; ``obs_stamp`` is the oldest stamp."""

    frames: tuple[Frame, ...]
    obs_stamp: float
    spread: float


class FrameStore:
    """Thread-safe latest-message slots, one per camera."""

    def __init__(self, num_cameras: int) -> None:
        self._lock = threading.Lock()
        self._latest: list[Frame | None] = [None] * num_cameras
        # Per camera, the newest stamp stored so far (used, waiting or discarded since); None before the first.
        self._newest_stamp: list[float | None] = [None] * num_cameras
        self.counters = [CameraCounters() for _ in range(num_cameras)]
        # While idle nobody consumes frames, so overwriting one is not a drop.
        self.active = True
        # Why the last attempt to match cameras failed and when; cleared when a matched set is taken.
        self.sync_problem = ''
        self.sync_problem_at: float | None = None
        self.sync_failures = 0

    @property
    def num_cameras(self) -> int:
        """Number of camera slots."""
        return len(self._latest)

    def put(self, index: int, msg: Any, stamp: float, received: float, max_age: float) -> None:
        """Store a message; a zero stamp means 'unstamped' and falls back to the arrival time.

        A stamped message no newer than the camera's newest one is a duplicate, unless it is older by more than
        ``max_age`` or the node clock (``received``) went back since the last message: then the source restarted.
        A duplicate is only counted: it says nothing new about the camera's clock, so the last stamp and clock skew
        stay those of the frame it repeats.
        """
        stamped = stamp > 0.0
        frame = Frame(msg, stamp if stamped else received, received, stamped)
        with self._lock:
            counters = self.counters[index]
            clock_went_back = counters.last_received is not None and received < counters.last_received
            counters.received += 1
            counters.last_received = received
            counters.arrivals.append(received)
            if stamped:
                newest = self._newest_stamp[index]
                if newest is not None and newest - max_age <= stamp <= newest and not clock_went_back:
                    counters.duplicates += 1
                    return
                self._newest_stamp[index] = stamp
                counters.last_skew = received - stamp
            else:
                counters.unstamped += 1
            if self._latest[index] is not None and self.active:
                counters.dropped += 1
            self._latest[index] = frame
            counters.last_stamp = frame.stamp

    def take(self, now: float, tolerance: float, max_age: float) -> FrameSet | str:
        """Take a matched frame set, or return a sentence saying why there is none yet.

        Frames older than ``max_age`` are discarded (counted as stale). When the stamps disagree by
        more than ``tolerance`` the older frames are kept waiting for their partners to catch up.
        """
        with self._lock:
            waiting = []
            for i, frame in enumerate(self._latest):
                if frame is not None and now - frame.stamp > max_age:
                    self.counters[i].stale += 1
                    self._latest[i] = None
                    frame = None
                if frame is None:
                    waiting.append(i)
            if waiting:
                return 'waiting for a fresh frame from camera(s) ' + ', '.join(map(str, waiting))
            frames = tuple(f for f in self._latest if f is not None)
            stamps = [f.stamp for f in frames]
            spread = max(stamps) - min(stamps)
            if spread > tolerance:
                oldest = stamps.index(min(stamps))
                self._latest[oldest] = None
                self.counters[oldest].dropped += 1
                self.sync_failures += 1
                self.sync_problem = (f'camera stamps differ by {spread * 1000:.0f} ms '
                                     f'(sync_tolerance {tolerance * 1000:.0f} ms)')
                self.sync_problem_at = now
                return self.sync_problem
            for i in range(len(self._latest)):
                self._latest[i] = None
                self.counters[i].used += 1
            self.sync_problem, self.sync_problem_at = '', None
            return FrameSet(frames, min(stamps), spread)

    def restore(self, frameset: FrameSet) -> None:
        """Put a taken set back unused, e.g. while its state is still on its way.

        As if it had never been taken: a frame that arrived since replaces the restored one (counted as a drop), and
        re-sends of the restored frames stay duplicates while it waits to be taken again.
        """
        with self._lock:
            for i, frame in enumerate(frameset.frames):
                self.counters[i].used -= 1
                if self._latest[i] is None:
                    self._latest[i] = frame
                elif self.active:
                    self.counters[i].dropped += 1

    def record_error(self, index: int, reason: str, now: float) -> None:
        """Remember why a frame of camera ``index`` was rejected."""
        with self._lock:
            counters = self.counters[index]
            counters.decode_errors += 1
            counters.last_error = reason
            counters.last_error_at = now

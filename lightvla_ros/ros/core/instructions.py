"""Instruction handling: normalisation, repeat detection, episodes (epochs) and stop.

``ros2 topic pub`` republishes at 1 Hz, so a repeat of the same text must not restart the task;
new text starts a new episode whose epoch lets the worker discard results computed for the old one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import Enum


class InstructionEventKind(str, Enum):
    """What an incoming instruction message did to the task."""

    NEW = 'new'
    REPEAT = 'repeat'
    STOP = 'stop'
    REJECTED = 'rejected'


@dataclass(frozen=True)
class InstructionEvent:
    """Outcome of one instruction message."""

    kind: InstructionEventKind
    epoch: int
    text: str | None
    reason: str = ''


@dataclass(frozen=True)
class InstructionSnapshot:
    """A consistent view of the task for the inference worker."""

    epoch: int
    text: str | None
    received_at: float | None
    refreshed_at: float | None


def normalize_instruction(text: str) -> str:
    """Collapse runs of whitespace and strip the ends."""
    return ' '.join(text.split())


def instruction_key(text: str) -> str:
    """Comparison key: the prompt is lower-cased, so case and a final full stop don't matter."""
    return normalize_instruction(text).casefold().rstrip('.').rstrip()


class InstructionTracker:
    """Thread-safe state of the current task.

    An empty (or whitespace-only) instruction, or one of ``stop_words``, stops and goes idle. An
    instruction that is too long or has control characters is rejected and also stops, so the robot
    never keeps executing an old task after the operator tried to send a new one.
    """

    def __init__(self, max_chars: int = 512, stop_words: tuple[str, ...] = ()) -> None:
        self._lock = threading.Lock()
        self._max_chars = max_chars
        self._stop_keys = {instruction_key(word) for word in stop_words if word.strip()}
        self._epoch = 0
        self._text: str | None = None
        self._received_at: float | None = None
        self._refreshed_at: float | None = None
        self.repeats = 0
        self.rejected = 0
        self.last_rejection = ''

    def update(self, raw: str, now: float) -> InstructionEvent:
        """Apply one message received at ``now`` (seconds) and say what it did."""
        with self._lock:
            reason = self._check(raw)
            if reason:
                self.rejected += 1
                self.last_rejection = reason
                return self._stop(InstructionEventKind.REJECTED, reason)
            text = normalize_instruction(raw)
            if not text or instruction_key(text) in self._stop_keys:
                if self._text is None:
                    return InstructionEvent(InstructionEventKind.REPEAT, self._epoch, None)
                return self._stop(InstructionEventKind.STOP, 'stop requested')
            if self._text is not None and instruction_key(text) == instruction_key(self._text):
                self.repeats += 1
                self._refreshed_at = now
                return InstructionEvent(InstructionEventKind.REPEAT, self._epoch, self._text)
            self._epoch += 1
            self._text = text
            self._received_at = now
            self._refreshed_at = now
            return InstructionEvent(InstructionEventKind.NEW, self._epoch, text)

    def stop(self, reason: str) -> InstructionEvent:
        """Go idle from outside the topic (e.g. the instruction timed out)."""
        with self._lock:
            if self._text is None:
                return InstructionEvent(InstructionEventKind.REPEAT, self._epoch, None)
            return self._stop(InstructionEventKind.STOP, reason)

    def snapshot(self) -> InstructionSnapshot:
        """Current epoch and text, read atomically."""
        with self._lock:
            return InstructionSnapshot(self._epoch, self._text, self._received_at,
                                       self._refreshed_at)

    @property
    def epoch(self) -> int:
        """Episode counter; it changes whenever the task changes (new text, stop, rejection)."""
        with self._lock:
            return self._epoch

    def _check(self, raw: str) -> str:
        if len(raw) > self._max_chars:
            return f'instruction too long ({len(raw)} characters, limit {self._max_chars})'
        bad = [ch for ch in raw if ord(ch) < 32 and ch not in '\t\n\r']
        if bad:
            return f'instruction contains {len(bad)} control character(s)'
        return ''

    def _stop(self, kind: InstructionEventKind, reason: str) -> InstructionEvent:
        self._epoch += 1
        self._text = None
        self._received_at = None
        self._refreshed_at = None
        return InstructionEvent(kind, self._epoch, None, reason)

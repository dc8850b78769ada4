"""The shared ``main()`` body of this package's nodes (init, spin one node until Ctrl-C, SIGTERM or shutdown,
clean up) and the spin loop its command-line clients and tests wait with."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any, Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

# How often the spin loop returns to Python, so a signal is handled within this time.
SIGNAL_CHECK_S = 0.1
# Signals closer together than this are one stop request (see _StopRequest).
SAME_REQUEST_S = 1.0


class _StopRequest:
    """The first SIGINT/SIGTERM asks for a clean stop (seen by the spin loop within ``SIGNAL_CHECK_S``); a later one,
    while that stop or a long callback (loading a model) is still running, abandons it. A repeat within
    ``SAME_REQUEST_S`` is the same request: Ctrl-C under ``ros2 launch`` reaches a node twice, once from the terminal's
    process group and once forwarded by launch."""

    def __init__(self) -> None:
        self.requested_at: float | None = None

    @property
    def requested(self) -> bool:
        return self.requested_at is not None

    def __call__(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.requested_at is None:
            self.requested_at = now
        elif now - self.requested_at > SAME_REQUEST_S:
            raise KeyboardInterrupt


_STOP = _StopRequest()


def stop_requested() -> bool:
    """Whether this process was asked to stop (a node finishing a long transition should not start another)."""
    return _STOP.requested


def spin_node(make_node: Callable[[], Node], args: list[str] | None = None) -> None:
    """Run the node built by ``make_node`` on a single-threaded executor (its own worker threads do the heavy work).

    SIGINT and SIGTERM are handled here rather than by rclpy: rclpy's handler shuts the context down at once, so a
    worker thread still publishing would log errors, and a lifecycle node could no longer stop the robot. Instead
    the node is first taken through its shutdown transition (stop motion, release the model) with the context
    still valid, then destroyed, then the context is shut down. A signal that arrives during a transition (say,
    while the model loads) takes effect when the transition ends; a second signal stops at once. The process then
    exits at once with status 0: this is the ``main()`` of the package's nodes.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = _STOP
    stop.requested_at = None
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    node = make_node()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    graceful = True
    try:
        while rclpy.ok() and not stop.requested:
            executor.spin_once(timeout_sec=SIGNAL_CHECK_S)
    except KeyboardInterrupt:
        graceful = False
    except ExternalShutdownException:
        pass
    try:
        if graceful and isinstance(node, LifecycleNode) and rclpy.ok() and \
                lifecycle_state(node) in ('unconfigured', 'inactive', 'active'):
            node.trigger_shutdown()
    except KeyboardInterrupt:
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # nothing may interrupt the last steps
            signal.signal(sig, signal.SIG_IGN)
        node.destroy_node()
        rclpy.try_shutdown()
    # Everything is stopped and released; finalizing the interpreter (torch, transformers: seconds of garbage
    # collection) would only risk ros2 launch's SIGTERM escalation after its 5 s grace period.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def lifecycle_state(node: LifecycleNode) -> str:
    """The primary state's label (unconfigured, inactive, active, finalized); rclpy offers it only as a service."""
    return node._state_machine.current_state[1]


def spin_until(executor: SingleThreadedExecutor, predicate: Callable[[], bool], timeout: float, period: float = 0.02) -> bool:
    """Pump ``executor`` (``period`` seconds at most per callback wait) until ``predicate()`` holds or ``timeout``
    seconds pass; returns whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=period)
    return predicate()

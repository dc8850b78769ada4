"""The shared ``main()`` body of this package's nodes (init, spin one node until Ctrl-C or shutdown, clean up) and
the spin loop its command-line clients and tests wait with."""

from __future__ import annotations

import time
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node


def spin_node(make_node: Callable[[], Node], args: list[str] | None = None) -> None:
    """Run the node built by ``make_node`` on a single-threaded executor (its own worker threads do the heavy work)."""
    rclpy.init(args=args)
    node = make_node()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def spin_until(executor: SingleThreadedExecutor, predicate: Callable[[], bool], timeout: float, period: float = 0.02) -> bool:
    """Pump ``executor`` (``period`` seconds at most per callback wait) until ``predicate()`` holds or ``timeout``
    seconds pass; returns whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=period)
    return predicate()

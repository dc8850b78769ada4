"""Publish the node's diagnostics tasks on /diagnostics at about 1 Hz.

Uses ``diagnostic_updater`` when the ROS install provides it; otherwise (PyPI wheels) publishes a
``DiagnosticArray`` with the same conventions: status names ``"<node>: <task>"``, hardware id set
to the compute device, one array per period.
"""

from __future__ import annotations

from typing import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from lightvla_ros.ros.core.status import StatusReport

TaskFn = Callable[[], StatusReport]


def to_status_msg(name: str, hardware_id: str, report: StatusReport) -> DiagnosticStatus:
    """A ``DiagnosticStatus`` message from a pure status report."""
    return DiagnosticStatus(level=bytes([report.level]), name=name, message=report.message,
                            hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=v) for k, v in report.values])


class Diagnostics:
    """Periodic diagnostics for one node, backed by diagnostic_updater when available."""

    def __init__(self, node: Node, hardware_id: str, period: float = 1.0) -> None:
        self._node = node
        self._hardware_id = hardware_id
        self._tasks: list[tuple[str, TaskFn]] = []
        self._updater = None
        try:
            import diagnostic_updater
        except ImportError:
            self._publisher = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
            self._timer = node.create_timer(period, self.publish_now)
        else:
            self._updater = diagnostic_updater.Updater(node, period=period)
            self._updater.setHardwareID(hardware_id)

    @property
    def uses_diagnostic_updater(self) -> bool:
        """True when the standard diagnostic_updater library does the publishing."""
        return self._updater is not None

    def add(self, task: str, fn: TaskFn) -> None:
        """Register a task; it is evaluated once per period."""
        if self._updater is None:
            self._tasks.append((task, fn))
            return

        def run(stat):  # diagnostic_updater passes a DiagnosticStatusWrapper to fill and return
            report = fn()
            stat.summary(report.level, report.message)
            for key, value in report.values:
                stat.add(key, value)
            return stat

        self._updater.add(task, run)

    def set_hardware_id(self, hardware_id: str) -> None:
        """Change the hardware id, e.g. to the GPU name once the model is on it."""
        self._hardware_id = hardware_id
        if self._updater is not None:
            self._updater.setHardwareID(hardware_id)

    def publish_now(self) -> None:
        """Evaluate every task and publish one DiagnosticArray."""
        if self._updater is not None:
            self._updater.force_update()
            return
        msg = DiagnosticArray()
        msg.header.stamp = self._node.get_clock().now().to_msg()
        prefix = self._node.get_name()
        for task, fn in self._tasks:
            try:
                report = fn()
            except Exception as exc:  # a broken task must not stop the others from reporting
                report = StatusReport(2, f'diagnostic task failed: {exc!r}', [])
            msg.status.append(to_status_msg(f'{prefix}: {task}', self._hardware_id, report))
        self._publisher.publish(msg)

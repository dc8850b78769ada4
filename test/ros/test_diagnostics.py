"""/diagnostics levels survive serialization, on both publishing paths.

``diagnostic_updater`` (a ROS install's package, not on PyPI) hands each task a ``DiagnosticStatusWrapper``: a
``DiagnosticStatus`` subclass whose ``summary(level, message)`` stores the level unchecked. The level field is a
byte, so an int there serializes to garbage. ``UpdaterStatus`` below does exactly what the wrapper does.
"""

from __future__ import annotations

import pytest
from ros_support import isolate_ros_environment

isolate_ros_environment()

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402

from lightvla_ros.ros.core.status import ERROR, LEVEL_NAMES, OK, STALE, WARN, StatusReport  # noqa: E402
from lightvla_ros.ros.diagnostics import fill_status, to_status_msg  # noqa: E402


class UpdaterStatus(DiagnosticStatus):
    """What diagnostic_updater's DiagnosticStatusWrapper does with summary() and add()."""

    def summary(self, level, message):
        self.level = level
        self.message = str(message)

    def add(self, key, value):
        self.values.append(KeyValue(key=key, value=value))


def wire_round_trip(status: DiagnosticStatus) -> DiagnosticStatus:
    return deserialize_message(serialize_message(status), DiagnosticStatus)


@pytest.mark.parametrize('level,expected', [(OK, DiagnosticStatus.OK), (WARN, DiagnosticStatus.WARN),
                                            (ERROR, DiagnosticStatus.ERROR), (STALE, DiagnosticStatus.STALE)])
def test_updater_path_serializes_the_standard_level(level, expected):
    sent = fill_status(UpdaterStatus(name='lightvla_node: model'),
                       StatusReport(level, LEVEL_NAMES[level], [('k', 'v')]))
    received = wire_round_trip(sent)
    assert received.level == expected
    assert received.message == LEVEL_NAMES[level] and [(kv.key, kv.value) for kv in received.values] == [('k', 'v')]


@pytest.mark.parametrize('level', [OK, WARN, ERROR, STALE])
def test_fallback_path_serializes_the_standard_level(level):
    received = wire_round_trip(to_status_msg('lightvla_node: model', 'cpu', StatusReport(level, 'm', [])))
    assert received.level == bytes([level]) and received.hardware_id == 'cpu'


def test_an_int_level_is_what_went_wrong():
    """The bug this guards against: an int stored by the wrapper does not arrive as that level."""
    status = UpdaterStatus()
    try:
        status.summary(WARN, 'int level')
        received = wire_round_trip(status)
    except (AssertionError, TypeError, ValueError):
        return  # a build that checks field types refuses the int outright
    assert received.level != DiagnosticStatus.WARN

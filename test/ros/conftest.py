"""Every test in this folder needs rclpy and the ROS 2 messages: marked ``ros``; the ones that start node processes
are ``slow`` too."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent
PROCESS_TESTS = {'test_node_process.py', 'test_lifecycle_process.py', 'test_commands.py'}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if path.parent == HERE:
            item.add_marker(pytest.mark.ros)
            if path.name in PROCESS_TESTS:
                item.add_marker(pytest.mark.slow)

"""The suite's pytest configuration (setup.cfg [tool:pytest]) works where a ROS 2 distro is sourced.

A sourced ROS 2 puts ``launch_testing`` and ``launch_pytest`` on the path; both register pytest plugins (entry
points ``launch_testing = launch_testing.pytest.hooks`` and ``launch_pytest = launch_pytest.plugin`` in their
setup.py). launch_testing's hook still takes the ``path`` argument that pytest 9 removed, and pytest 9 refuses to
start with it. These tests install look-alike plugins under the same entry-point names.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

# launch_testing's hook signature: the py.path ``path`` argument is gone from pytest 9's hook specification
OUTDATED_HOOK = "def pytest_pycollect_makemodule(path, parent):\n    return None\n"


def install_plugin(site: Path, entry_point: str) -> None:
    """A distribution registering ``entry_point`` in the ``pytest11`` group, as the ROS packages do."""
    module = f"lookalike_{entry_point}"
    (site / f"{module}.py").write_text(OUTDATED_HOOK)
    info = site / f"{module}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[pytest11]\n{entry_point} = {module}\n")


def run_pytest(tmp_path: Path, config: Path) -> subprocess.CompletedProcess:
    site = tmp_path / "site"
    site.mkdir()
    for entry_point in ("launch_testing", "launch_pytest"):
        install_plugin(site, entry_point)
    (tmp_path / "test_trivial.py").write_text("def test_trivial():\n    pass\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-c", str(config), str(tmp_path / "test_trivial.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_our_configuration_runs_with_the_ros_pytest_plugins_installed(tmp_path):
    result = run_pytest(tmp_path, REPO / "setup.cfg")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


@pytest.mark.skipif(int(pytest.__version__.split(".")[0]) < 9, reason="pytest < 9 only warns about the path argument")
def test_without_it_pytest_refuses_to_start(tmp_path):
    """The look-alike plugins reproduce the failure the configuration prevents."""
    bare = tmp_path / "bare.ini"
    bare.write_text("[pytest]\n")
    result = run_pytest(tmp_path, bare)
    assert result.returncode == 3 and "PluginValidationError" in result.stdout + result.stderr

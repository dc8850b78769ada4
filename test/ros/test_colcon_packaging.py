"""setup.py as colcon runs it: no warnings on stderr (colcon reports every build with stderr output), and the
launch file's config files installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_setup_py_runs_without_stderr_output():
    # setuptools >= 72 no longer knows tests_require and warns "Unknown distribution option" on stderr
    result = subprocess.run([sys.executable, 'setup.py', '--name'], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == 'lightvla_ros'
    assert result.stderr == ''


def test_config_files_of_the_launch_file_are_installed():
    result = subprocess.run([sys.executable, '-c', 'import runpy, setuptools; setuptools.setup = lambda **kw: '
                             'print([f for dest, files in kw["data_files"] for f in files '
                             'if dest.endswith("/config")]); runpy.run_path("setup.py")'],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    installed = result.stdout
    for name in ('lightvla.yaml', 'diagnostics_analyzers.yaml', 'lightvla.rviz', 'fastdds_camera_transport.xml'):
        assert f'config/{name}' in installed, (name, result.stderr)

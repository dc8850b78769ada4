"""Shared test fixtures: the reference fixture (a checkpoint the authors' code ran, with its golden outputs) and a
random tiny checkpoint made by us.

Tests mirror the code: ``test/model`` and ``test/training`` for the package, ``test/benchmarks`` and
``test/experiments`` for the code run from a checkout. Test file names are unique across folders (pytest imports
them by name). Markers (registered in setup.cfg): ``slow``, ``ros``, ``golden``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def fixtures_root() -> Path:
    """``../shared/fixtures`` beside the repository, or ``$LIGHTVLA_FIXTURES``."""
    return Path(os.environ.get("LIGHTVLA_FIXTURES", REPO.parent / "shared" / "fixtures"))


@pytest.fixture(scope="session")
def reference_fixture() -> Path:
    """The reference fixture checkpoint folder ``oft-tiny-libero`` (skips the test when it is absent)."""
    path = fixtures_root() / "oft-tiny-libero"
    if not path.is_dir():
        pytest.skip(f"reference fixture folder {path} is absent (set LIGHTVLA_FIXTURES to the folder holding oft-tiny-libero)")
    return path


@pytest.fixture(scope="session")
def reference_golden(reference_fixture: Path) -> dict:
    """The reference code's outputs on the fixture: ``cases`` from golden.json, ``arrays`` from golden_arrays.npz."""
    data = json.loads((reference_fixture / "golden.json").read_text())
    arrays = np.load(reference_fixture / "golden_arrays.npz")
    data["arrays"] = {k: arrays[k] for k in arrays.files}
    return data


@pytest.fixture(scope="session")
def random_tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``lightvla make-tiny``'s checkpoint (random weights, seed 0), written once per session."""
    from lightvla_ros.model.tiny import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


ROS_TESTS = Path(__file__).parent / "ros"
# Test files that start node processes (the model loads in each): slow on a 2-core machine.
NODE_PROCESS_TESTS = {"test_node_process.py", "test_lifecycle_process.py", "test_commands.py"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under test/ros needs rclpy and the ROS 2 messages: marked ``ros`` (and ``slow`` where nodes run in
    their own processes), so ``-m "not ros"`` runs the rest without them."""
    for item in items:
        path = Path(str(item.fspath))
        if path.parent == ROS_TESTS:
            item.add_marker(pytest.mark.ros)
            if path.name in NODE_PROCESS_TESTS:
                item.add_marker(pytest.mark.slow)


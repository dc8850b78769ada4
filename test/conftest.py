"""Shared test fixtures: the reference fixture checkpoint with its goldens, and a tiny checkpoint made by us."""

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
def oft_tiny() -> Path:
    path = fixtures_root() / "oft-tiny-libero"
    if not path.is_dir():
        pytest.skip(f"reference fixture folder {path} is absent (set LIGHTVLA_FIXTURES to the folder holding oft-tiny-libero)")
    return path


@pytest.fixture(scope="session")
def golden(oft_tiny: Path) -> dict:
    data = json.loads((oft_tiny / "golden.json").read_text())
    arrays = np.load(oft_tiny / "golden_arrays.npz")
    data["arrays"] = {k: arrays[k] for k in arrays.files}
    return data


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lightvla_ros.model.tiny import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))

"""`lightvla train` on LeRobot datasets as LeRobot writes them: v3.0 with its default AV1 videos, v2.1 with
H.264 videos, and images in the parquet; the run prints the feature mapping and the effective batch."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from lerobot_support import barcode_episodes, write_lerobot

from lightvla_ros.cli import main as cli_main
from lightvla_ros.model.tiny import make_tiny_checkpoint
from lightvla_ros.policy import LightVLAPolicy
from lightvla_ros.training.trainer import TrainConfig, run_header

REPO_ROOT = Path(__file__).resolve().parents[2]
KEYS = ["observation.images.wrist", "observation.images.front"]  # wrist first in meta/info.json, as some datasets have it


def _base_checkpoint(tmp_path: Path) -> Path:
    fixtures = Path(os.environ.get("LIGHTVLA_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))
    fixture = fixtures / "oft-tiny-libero"
    return fixture if (fixture / "config.json").is_file() else make_tiny_checkpoint(tmp_path / "tiny")


@pytest.mark.parametrize("layout", [dict(version="v3.0", dtype="video", codec="libsvtav1", episodes_per_file=2),
                                    dict(version="v2.1", dtype="video", codec="libx264"),
                                    dict(version="v3.0", dtype="image")], ids=["v3.0-av1", "v2.1-h264", "v3.0-images"])
def test_lerobot_dataset_trains_and_loads(tmp_path, monkeypatch, capsys, layout):
    monkeypatch.setenv("SVT_LOG", "1")
    data = write_lerobot(tmp_path / "pick_place", barcode_episodes([6, 5, 7]), KEYS, **layout)
    code = cli_main(["train", "--checkpoint", str(_base_checkpoint(tmp_path)), "--data", str(data), "--out", str(tmp_path / "run"),
                     "--steps", "2", "--batch-size", "2", "--lora-rank", "4", "--save-every", "0", "--num-workers", "0",
                     "--device", "cpu", "--no-progress"])
    assert code == 0
    log = capsys.readouterr().err
    assert "3 usable episode(s), 18 frame(s); 0 bad episode(s)" in log
    assert "third-person camera: observation.images.front" in log and "wrist camera: observation.images.wrist" in log
    assert "effective batch 2 samples per step = 2 per process x 1 process(es) x 1 accumulation" in log
    assert "for the reference's batch use --grad-accum 32" in log
    policy = LightVLAPolicy.from_checkpoint(tmp_path / "run" / "final", device="cpu", center_crop=True)
    assert policy.unnorm_key == "pick_place" and policy.num_images == 2
    out = policy.predict([np.zeros((64, 64, 3), np.uint8)] * 2, "task number 0", np.zeros(8))
    assert out.actions.shape == (policy.chunk_len, 7) and np.all(np.isfinite(out.actions))


def test_run_header_states_the_effective_batch_against_the_reference():
    episodes = barcode_episodes([4, 4])
    config = TrainConfig(checkpoint="", out="", batch_size=8, grad_accum=2, steps=1000, lora_rank=16)
    header = run_header(config, 2, episodes[:1], episodes[1:])
    assert header.splitlines() == [
        "run: 1 training episode(s), 4 frames; 1 held out",
        "  1000 steps, lr 0.0005 x 0.1 at step(s) [750], LoRA rank 16 alpha 16",
        "  effective batch 32 samples per step = 8 per process x 2 process(es) x 2 accumulation (reference recipe: 64 = 8 GPUs x 8)",
        "  for the reference's batch use --grad-accum 4 (64 per step; each step then takes 2x as long)"]
    reference = TrainConfig(checkpoint="", out="", batch_size=8, grad_accum=8)
    assert "--grad-accum" not in run_header(reference, 1, episodes, [])

"""Loading and saving the release layout, and the errors a user sees for broken checkpoint folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_rgb
from safetensors import safe_open
from safetensors.torch import save_file

from lightvla_ros.model.checkpoint import load_model, save_checkpoint
from lightvla_ros.model.errors import CheckpointError, InputError
from lightvla_ros.policy import LightVLAPolicy


def copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for path in dst.iterdir():
        path.chmod(0o644)
    return dst


def predict_case(checkpoint: Path, reference_fixture: Path, case: dict, **kwargs):
    policy = LightVLAPolicy.from_checkpoint(checkpoint, device="cpu", dtype="float32", preprocessing="plain",
                                            **kwargs)  # as the goldens
    images = [load_rgb(reference_fixture / name) for name in case["images"]]
    return policy.predict(images, case["instruction"], case["proprio_raw"])


@pytest.mark.golden
def test_sharded_weights_with_index_load_like_a_single_file(reference_fixture, reference_golden, tmp_path):
    ckpt = copy_checkpoint(reference_fixture, tmp_path / "sharded")
    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    (ckpt / "model.safetensors").unlink()
    keys = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, names in shards.items():
        save_file({k: tensors[k] for k in names}, str(ckpt / name))
    weight_map = {k: name for name, names in shards.items() for k in names}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    out = predict_case(ckpt, reference_fixture, reference_golden["cases"][0])
    np.testing.assert_allclose(out.actions, reference_golden["cases"][0]["actions"], atol=1e-4)


@pytest.mark.golden
def test_saved_checkpoint_reloads_with_identical_predictions(reference_fixture, reference_golden, tmp_path):
    model, files = load_model(reference_fixture)
    save_checkpoint(model, tmp_path / "resaved", step=123, source=files)
    names = {p.name for p in (tmp_path / "resaved").iterdir()}
    assert {"config.json", "model.safetensors", "action_head--123_checkpoint.pt", "proprio_projector--123_checkpoint.pt",
            "dataset_statistics.json", "tokenizer.json", "preprocessor_config.json"} <= names
    with safe_open(str(tmp_path / "resaved" / "model.safetensors"), "pt") as f:
        assert "vision_backbone.featurizer.blocks.0.ls1.scale_factor" in f.keys(), "release key names are kept"
        assert "language_model.lm_head.weight" in f.keys()
    head = torch.load(tmp_path / "resaved" / "action_head--123_checkpoint.pt", weights_only=True)
    assert all(k.startswith("module.") for k in head)
    out = predict_case(tmp_path / "resaved", reference_fixture, reference_golden["cases"][1])
    np.testing.assert_allclose(out.normalized_actions, reference_golden["cases"][1]["normalized_actions"], atol=1e-6)


def test_single_camera_checkpoint_without_proprio(tmp_path):
    from lightvla_ros.model.tiny import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "one-cam", seed=3, num_images=1, use_proprio=False, hidden=48, layers=3)
    assert not list(ckpt.glob("proprio_projector--*"))
    policy = LightVLAPolicy.from_checkpoint(ckpt, device="cpu")
    assert policy.num_images == 1 and not policy.use_proprio
    out = policy.predict([np.zeros((120, 160, 3), np.uint8)], "reach the red cube")
    assert out.num_patches == 256 and out.actions.shape == (8, 7)
    with pytest.raises(InputError, match="expects 1"):
        policy.predict([np.zeros((8, 8, 3), np.uint8)] * 2, "reach the red cube")


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda d: shutil.rmtree(d), "does not exist"),
        (lambda d: (d / "config.json").unlink(), "no config.json"),
        (lambda d: (d / "model.safetensors").unlink(), "no model.safetensors"),
        (lambda d: (d / "action_head--40000_checkpoint.pt").unlink(), "no action_head"),
        (lambda d: shutil.copy(d / "action_head--40000_checkpoint.pt", d / "action_head--1_checkpoint.pt"), "several action_head"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 100), "cannot read model.safetensors"),
        (lambda d: (d / "action_head--40000_checkpoint.pt").write_bytes(b"garbage"), "cannot read action_head"),
        (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "tokenizer.json").unlink(), "no tokenizer.json"),
    ],
)
def test_broken_checkpoints_get_clear_errors(reference_fixture, tmp_path, breakage, message):
    ckpt = copy_checkpoint(reference_fixture, tmp_path / "broken")
    breakage(ckpt)
    with pytest.raises(CheckpointError, match=message):
        LightVLAPolicy.from_checkpoint(ckpt, device="cpu")


class Payload:
    """Anything that is not a tensor: unpickling it would run code of the file's choosing."""

    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_in_a_pt_file_is_refused(reference_fixture, tmp_path):
    ckpt = copy_checkpoint(reference_fixture, tmp_path / "evil")
    torch.save({"module.model.fc2.weight": Payload()}, ckpt / "action_head--40000_checkpoint.pt")
    with pytest.raises(CheckpointError, match="cannot read action_head"):
        LightVLAPolicy.from_checkpoint(ckpt, device="cpu")


def test_weights_that_do_not_match_the_config_are_reported(reference_fixture, tmp_path):
    ckpt = copy_checkpoint(reference_fixture, tmp_path / "mismatch")
    config = json.loads((ckpt / "config.json").read_text())
    config["text_config"]["num_hidden_layers"] = 3
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="missing .*layers.2"):
        LightVLAPolicy.from_checkpoint(ckpt, device="cpu")


def test_unknown_unnorm_key_lists_the_available_ones(reference_fixture):
    with pytest.raises(InputError, match="available: libero_spatial_no_noops"):
        LightVLAPolicy.from_checkpoint(reference_fixture, device="cpu", unnorm_key="bridge_orig")


def test_cuda_request_without_cuda_is_explained(reference_fixture):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InputError, match="CUDA is not available"):
        LightVLAPolicy.from_checkpoint(reference_fixture, device="cuda:0")

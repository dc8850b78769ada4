"""The ``lightvla`` command line: predict, make-tiny and flops, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from lightvla_ros.cli import main
from lightvla_ros.model.flops import ModelShape, count_flops
from lightvla_ros.model.presets import openvla_oft_7b_config


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lightvla_ros.cli", *args], capture_output=True, text=True, timeout=300)


def predict_args(reference_fixture, case, *extra):
    images = [a for name in case["images"] for a in ("--image", str(reference_fixture / name))]
    proprio = ",".join(repr(v) for v in case["proprio_raw"])
    return ["predict", "--checkpoint", str(reference_fixture), *images, "--instruction", case["instruction"],
            "--proprio", proprio, "--device", "cpu", "--dtype", "float32", *extra]


@pytest.mark.golden
def test_predict_json_reproduces_the_golden_case(reference_fixture, reference_golden, capsys):
    case = reference_golden["cases"][1]
    # the golden skips the evaluation image chain (auto without --center-crop is plain as well)
    assert main(predict_args(reference_fixture, case, "--json", "--preprocessing", "plain")) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"actions", "normalized_actions", "kept_patch_indices", "num_kept", "num_patches", "timings_ms"} <= set(out)
    assert out["kept_patch_indices"] == case["kept_patch_indices"] and out["num_patches"] == 512
    np.testing.assert_allclose(out["actions"], case["actions"], atol=1e-4)
    assert {"vision", "projector", "pruner", "llm", "head", "total"} <= set(out["timings_ms"])


def test_predict_errors_are_one_clear_line(reference_fixture, reference_golden, tmp_path):
    case = reference_golden["cases"][0]
    result = run_cli(*predict_args(reference_fixture, case, "--unnorm-key", "nope"))
    assert result.returncode == 2
    assert "unknown unnorm key 'nope'; available: libero_spatial_no_noops" in result.stderr
    assert "Traceback" not in result.stderr
    grey = tmp_path / "grey16.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint16)).save(grey)
    result = run_cli("predict", "--checkpoint", str(reference_fixture), "--image", str(grey), "--image", str(grey),
                     "--instruction", "go", "--proprio", "0,0,0,0,0,0,0,0")
    assert result.returncode == 2 and "RGB-like" in result.stderr and "Traceback" not in result.stderr


def test_missing_checkpoint_and_nan_state_are_explained(reference_fixture, reference_golden, tmp_path, capsys):
    case = reference_golden["cases"][0]
    args = predict_args(reference_fixture, case)
    args[args.index(str(reference_fixture))] = str(tmp_path / "nowhere")
    assert main(args) == 2
    assert "does not exist" in capsys.readouterr().err
    args = predict_args(reference_fixture, case)
    args[args.index("--proprio") + 1] = "0,0,nan,0,0,0,0,0"
    assert main(args) == 2
    assert "NaN/inf" in capsys.readouterr().err


def test_make_tiny_writes_a_loadable_checkpoint(tmp_path, capsys):
    assert main(["make-tiny", str(tmp_path / "t"), "--cameras", "1", "--no-proprio"]) == 0
    capsys.readouterr()
    image = tmp_path / "img.png"
    from PIL import Image

    Image.new("RGB", (100, 80), (200, 10, 10)).save(image)
    assert main(["predict", "--checkpoint", str(tmp_path / "t"), "--image", str(image), "--instruction", "reach the red cube", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert np.asarray(out["actions"]).shape == (8, 7) and out["num_patches"] == 256


def test_flops_of_the_7b_model_land_near_the_paper():
    """Paper: 8.8 T with 512 patches, 3.6 T with ~78 kept (we count 3.0 T there; see README)."""
    shape = ModelShape.of_config(openvla_oft_7b_config())
    full = count_flops(shape, 2, None)
    pruned = count_flops(shape, 2, 78)
    assert full.total / 1e12 == pytest.approx(8.8, abs=0.15)
    assert 2.9 < pruned.total / 1e12 < 3.7
    assert full.sequence_length == 605 and pruned.sequence_length == 171
    assert pruned.vision == full.vision and pruned.projector == full.projector, "pruning happens after the projector"
    assert pruned.pruner / pruned.total < 0.02
    with_head = count_flops(shape, 2, None, include_lm_head=True)
    assert with_head.lm_head / 1e12 == pytest.approx(0.16, abs=0.01), "what the reference wastes on logits"


def test_flops_command_prints_a_table(capsys):
    assert main(["flops", "--kept", "78"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[1].split()[0] == "512" and lines[2].split()[0] == "78"


def test_ros_tools_start_without_importing_torch():
    """`lightvla instruct` / `monitor` stand in for the ROS 2 CLI and must start fast."""
    code = "import sys; from lightvla_ros.cli import build_parser; build_parser('instruct'); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr

"""The authors' LIBERO evaluation image chain, reproduced without TensorFlow, against TensorFlow's own arrays.

``../shared/fixtures/oft-eval-preprocessing`` holds every stage of the chain as TensorFlow computed it with the
authors' functions. The target: each stage reproduced exactly, at worst one grey level off on under 0.1% of the
elements. Each stage is checked on its own (from the golden previous stage) and the chain end to end.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import fixtures_root
from PIL import Image

from lightvla_ros.cli import main
from lightvla_ros.model.errors import InputError
from lightvla_ros.model.eval_preprocessing import (
    centre_crop_resize,
    jpeg_round_trip,
    lanczos3_resize,
    lanczos3_taps,
    oft_eval_frame,
)
from lightvla_ros.model.processing import CENTER_CROP_AREA, ImageProcessor

FIXTURE = fixtures_root() / "oft-eval-preprocessing"
CASES = json.loads((FIXTURE / "golden_preprocess.json").read_text())["cases"] if FIXTURE.is_dir() else []
FULL_CHAIN = [case["name"] for case in CASES if case["path"] == "full"]
MAX_OFF_BY_ONE_FRACTION = 1e-3


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    if not FIXTURE.is_dir():
        pytest.skip(f"fixture folder {FIXTURE} is absent (set LIGHTVLA_FIXTURES to the folder holding oft-eval-preprocessing)")
    arrays = np.load(FIXTURE / "golden_preprocess.npz")
    return {key: arrays[key] for key in arrays.files}


def chain_start(golden: dict[str, np.ndarray], name: str) -> np.ndarray:
    """What the chain is fed: the rotated env frame for LIBERO frames (the rotation is the camera's), else the input."""
    return golden.get(f"{name}__after_rotate", golden[f"{name}__input"])


def assert_matches(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    assert ours.dtype == np.uint8 and ours.shape == theirs.shape, f"{what}: {ours.dtype} {ours.shape} vs {theirs.shape}"
    diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
    off_by_one = float(np.mean(diff == 1))
    print(f"{what}: max |diff| {diff.max()}, off by one on {100 * off_by_one:.4f}% of {diff.size} elements")
    assert diff.max() <= 1 and off_by_one < MAX_OFF_BY_ONE_FRACTION, (
        f"{what}: max |diff| {diff.max()}, {100 * off_by_one:.4f}% off by one")


@pytest.mark.parametrize("name", FULL_CHAIN)
def test_jpeg_round_trip_decodes_like_tensorflow(golden, name):
    assert_matches(jpeg_round_trip(chain_start(golden, name)), golden[f"{name}__after_jpeg"], f"{name} after_jpeg")


@pytest.mark.parametrize("name", FULL_CHAIN)
def test_lanczos3_resize_matches_tensorflow(golden, name):
    assert_matches(lanczos3_resize(golden[f"{name}__after_jpeg"], 224, 224), golden[f"{name}__after_resize"],
                   f"{name} after_resize")


@pytest.mark.parametrize("name", [case["name"] for case in CASES])
def test_centre_crop_matches_tensorflow_crop_and_resize(golden, name):
    source = golden.get(f"{name}__after_resize", golden[f"{name}__input"])
    assert_matches(centre_crop_resize(source, CENTER_CROP_AREA), golden[f"{name}__after_center_crop"],
                   f"{name} after_center_crop")


@pytest.mark.parametrize("name", FULL_CHAIN)
def test_whole_chain_from_the_camera_frame(golden, name):
    frame = chain_start(golden, name)
    assert_matches(oft_eval_frame(frame, 224, None), golden[f"{name}__after_resize"], f"{name} chain to after_resize")
    assert_matches(oft_eval_frame(frame, 224, CENTER_CROP_AREA), golden[f"{name}__after_center_crop"],
                   f"{name} chain to after_center_crop")


def test_lanczos_taps_are_normalised_and_stay_inside_the_image():
    for output_size, input_size in [(224, 256), (224, 480), (224, 640), (224, 224), (224, 100)]:
        indices, weights = lanczos3_taps(output_size, input_size)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
        assert indices.min() >= 0 and indices.max() < input_size


def test_same_size_resize_keeps_the_image():
    image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    np.testing.assert_array_equal(lanczos3_resize(image, 224, 224), image)


@pytest.mark.parametrize("name", FULL_CHAIN)
def test_oft_processor_mode_hands_the_authors_image_to_the_normalisation(golden, name):
    processor = ImageProcessor()
    frame = chain_start(golden, name)
    np.testing.assert_array_equal(np.asarray(processor.frame(frame, 0, crop=True, preprocessing="oft")),
                                  golden[f"{name}__after_center_crop"])
    np.testing.assert_array_equal(processor([frame], crop=True, preprocessing="oft").numpy(),
                                  processor([golden[f"{name}__after_center_crop"]]).numpy())


def test_plain_mode_is_the_processor_alone_and_unknown_modes_are_refused():
    image = np.random.default_rng(1).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    processor = ImageProcessor()
    np.testing.assert_array_equal(processor([image], preprocessing="plain").numpy(), processor([image]).numpy())
    with pytest.raises(InputError, match="preprocessing must be one of oft, plain"):
        processor([image], preprocessing="tensorflow")


def test_policy_with_the_centre_crop_runs_the_oft_chain_and_refuses_unknown_modes(random_tiny_checkpoint):
    from lightvla_ros.policy import LightVLAPolicy, Observation

    policy = LightVLAPolicy.from_checkpoint(random_tiny_checkpoint, device="cpu", center_crop=True)
    assert policy.preprocessing == "oft"
    images = [np.random.default_rng(seed).integers(0, 256, (256, 256, 3), dtype=np.uint8) for seed in range(policy.num_images)]
    proprio = 0.5 * (policy.normalizer.proprio_low + policy.normalizer.proprio_high)
    pixels = policy.prepare([Observation(images, "pick up the bowl", proprio)])[0][0]
    expected = policy.processor([oft_eval_frame(image, 224, CENTER_CROP_AREA) for image in images])
    np.testing.assert_array_equal(pixels.numpy(), expected.numpy())
    with pytest.raises(InputError, match="preprocessing must be one of"):
        LightVLAPolicy.from_checkpoint(random_tiny_checkpoint, device="cpu", preprocessing="pillow")


@pytest.mark.parametrize("crop", [False, True])
def test_preprocess_command_writes_what_the_model_sees_losslessly(golden, tmp_path, capsys, crop):
    name = "nonsquare_480x640_s1"
    out = tmp_path / "seen.png"
    args = ["preprocess", "--image", str(FIXTURE / f"{name}.png"), "--out", str(out)]
    assert main(args + (["--center-crop"] if crop else [])) == 0
    assert str(out) in capsys.readouterr().out
    with Image.open(out) as written:
        assert written.mode == "RGB" and written.size == (224, 224)
        np.testing.assert_array_equal(np.asarray(written), golden[f"{name}__after_center_crop" if crop else f"{name}__after_resize"])


def test_preprocess_command_refuses_a_lossy_output(tmp_path, capsys):
    assert main(["preprocess", "--image", str(FIXTURE / "synthetic_s0.png"), "--out", str(tmp_path / "seen.jpg")]) == 2
    assert "must be a .png file" in capsys.readouterr().err

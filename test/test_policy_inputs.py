"""Bad observations are refused with a message that says what is wrong, before anything reaches torch."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lightvla_ros.model.errors import InputError
from lightvla_ros.model.processing import ImageProcessor, center_crop
from lightvla_ros.policy import LightVLAPolicy

GOOD = [np.zeros((64, 80, 3), np.uint8)] * 2
STATE = np.zeros(8)


@pytest.fixture(scope="module")
def policy(random_tiny_checkpoint):
    return LightVLAPolicy.from_checkpoint(random_tiny_checkpoint, device="cpu")


@pytest.mark.parametrize(
    "images, instruction, proprio, message",
    [
        (GOOD[:1], "go", STATE, "got 1 image"),
        ([np.zeros((64, 80), np.uint8)] * 2, "go", STATE, "expected an RGB image"),
        ([np.zeros((64, 80, 4), np.uint8)] * 2, "go", STATE, "expected an RGB image"),
        ([np.zeros((0, 80, 3), np.uint8)] * 2, "go", STATE, "empty"),
        ([np.zeros((64, 80, 3), np.float32)] * 2, "go", STATE, "expected uint8"),
        (GOOD, "   ", STATE, "instruction is empty"),
        (GOOD, "x" * 5000, STATE, "characters long"),
        (GOOD, "go", None, "needs the robot state"),
        (GOOD, "go", np.zeros(5), "expects 8"),
        (GOOD, "go", np.array([0, 0, np.nan, 0, 0, 0, 0, np.inf]), r"NaN/inf at index \[2, 7\]"),
    ],
)
def test_bad_observations_are_refused(policy, images, instruction, proprio, message):
    with pytest.raises(InputError, match=message):
        policy.predict(images, instruction, proprio)
    assert policy.predict(GOOD, "go", STATE).actions.shape == (8, 7), "the policy still works afterwards"


def test_instruction_too_long_for_the_context_is_refused(policy):
    words = " ".join(f"word{i}" for i in range(100))  # < 1000 characters but more tokens than this context allows
    original, policy.prompts.max_tokens = policy.prompts.max_tokens, 120
    try:
        with pytest.raises(InputError, match="too long"):
            policy.predict(GOOD, words, STATE)
    finally:
        policy.prompts.max_tokens = original


def test_instruction_case_and_spacing_do_not_matter(policy):
    images = [np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)] * 2
    a = policy.predict(images, "Pick  up the RED cube", STATE)
    b = policy.predict(images, "pick up the red cube", STATE)
    np.testing.assert_array_equal(a.actions, b.actions)


def test_gripper_dimension_passes_through_unnormalisation(policy):
    out = policy.predict(GOOD, "go", STATE)
    np.testing.assert_allclose(out.actions[:, 6], out.normalized_actions[:, 6], atol=1e-6)
    low, high = policy.normalizer.action_low[:6], policy.normalizer.action_high[:6]
    np.testing.assert_allclose(out.actions[:, :6], 0.5 * (out.normalized_actions[:, :6] + 1) * (high - low + 1e-8) + low, atol=1e-5)


def test_state_is_clipped_to_the_q01_q99_range(policy):
    norm = policy.normalizer
    far = norm.proprio_high + 10.0
    np.testing.assert_allclose(norm.normalize_proprio(far), np.ones(8))


def test_center_crop_keeps_ninety_percent_of_the_area():
    image = Image.new("RGB", (200, 200), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 200, 5))  # a border stripe the crop removes
    cropped = np.asarray(center_crop(image))
    assert cropped.shape == (200, 200, 3) and cropped.max() == 0
    processor = ImageProcessor()
    assert processor([np.asarray(image)], crop=True).shape == (6, 224, 224)


@pytest.mark.parametrize("center_crop,asked,used", [(True, "auto", "oft"), (False, "auto", "plain"),
                                                    (False, "oft", "oft"), (True, "plain", "plain")])
def test_auto_preprocessing_is_the_authors_chain_exactly_when_centre_cropping(random_tiny_checkpoint, center_crop,
                                                                              asked, used):
    policy = LightVLAPolicy.from_checkpoint(random_tiny_checkpoint, device="cpu", center_crop=center_crop,
                                            preprocessing=asked)
    assert policy.preprocessing == used

"""Conformance with the authors' reference implementation on the fixture checkpoint (float32, CPU).

Each golden value was produced by the reference code; matching them shows we load and run real checkpoints right.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import load_rgb

from lightvla_ros.model.processing import PromptBuilder
from lightvla_ros.policy import LightVLAPolicy, Observation

pytestmark = pytest.mark.golden
TOL = 1e-4


@pytest.fixture(scope="module")
def policy(reference_fixture):
    # the goldens were computed on the images as they are, without the evaluation image chain
    return LightVLAPolicy.from_checkpoint(reference_fixture, device="cpu", dtype="float32", preprocessing="plain")


def case_inputs(reference_fixture, case):
    return [load_rgb(reference_fixture / name) for name in case["images"]], case["instruction"], np.array(case["proprio_raw"])


@pytest.mark.parametrize("index", [0, 1])
def test_preprocessed_pixels_match_reference_processor(policy, reference_fixture, reference_golden, index):
    images, _, _ = case_inputs(reference_fixture, reference_golden["cases"][index])
    pixels = policy.processor(images).numpy()
    np.testing.assert_allclose(pixels, reference_golden["arrays"][f"case{index}_pixel_values"][0], atol=TOL)


@pytest.mark.parametrize("index", [0, 1])
def test_prompt_tokens_and_proprio_match(policy, reference_golden, index):
    case = reference_golden["cases"][index]
    assert PromptBuilder.prompt(case["instruction"]) == case["prompt"]
    assert policy.prompts.prompt_ids(case["instruction"]) == case["input_ids"]
    ids = policy.prompts(case["instruction"])
    assert ids[len(case["input_ids"])] == 29871, "token 29871 follows the prompt"
    assert ids[-1] == 2 and len(ids) == len(case["input_ids"]) + 1 + 56 + 1, "56 action slots then the stop token"
    np.testing.assert_allclose(policy.normalizer.normalize_proprio(case["proprio_raw"]), case["proprio_normalized"], atol=1e-6)


@pytest.mark.parametrize("index", [0, 1])
def test_kept_patches_and_actions_match(policy, reference_fixture, reference_golden, index):
    case = reference_golden["cases"][index]
    out = policy.predict(*case_inputs(reference_fixture, case))
    assert out.kept_patch_indices.tolist() == case["kept_patch_indices"]
    assert out.num_kept == case["num_kept"] and out.num_patches == 512
    np.testing.assert_allclose(out.normalized_actions, case["normalized_actions"], atol=TOL)
    np.testing.assert_allclose(out.actions, case["actions"], atol=TOL)


@pytest.mark.parametrize("index", [0, 1])
def test_pruner_scores_and_training_selection_match(policy, reference_fixture, reference_golden, index):
    """The training-mode (straight-through) selection with zero noise picks the golden ``per_query_argmax``."""
    case = reference_golden["cases"][index]
    pixels, ids, lengths, proprio = policy.prepare([Observation(*case_inputs(reference_fixture, case))])
    model = policy.model
    model.train()
    try:
        with torch.no_grad():
            out = model(pixels, ids, lengths, proprio, noise_scale=0.0)
    finally:
        model.eval()
    assert out.per_query_argmax[0].tolist() == case["per_query_argmax"]
    np.testing.assert_allclose(out.scores[0].numpy(), reference_golden["arrays"][f"case{index}_scores"], atol=1e-4)
    np.testing.assert_allclose(out.normalized_actions[0].numpy().shape, (8, 7))


def test_batch_of_both_cases_equals_each_case_alone(policy, reference_fixture, reference_golden):
    """The reference cannot batch (docs/model-notes.md §10); here kept sets and prompt lengths differ and results must not mix."""
    cases = reference_golden["cases"]
    batch = policy.predict_batch([Observation(*case_inputs(reference_fixture, c)) for c in cases])
    for out, case in zip(batch, cases):
        alone = policy.predict(*case_inputs(reference_fixture, case))
        assert out.kept_patch_indices.tolist() == case["kept_patch_indices"] == alone.kept_patch_indices.tolist()
        np.testing.assert_allclose(out.normalized_actions, alone.normalized_actions, atol=1e-5)
        np.testing.assert_allclose(out.actions, case["actions"], atol=TOL)


def test_batch_with_budget_and_without_pruning_equals_singles(policy, reference_fixture, reference_golden):
    observations = [Observation(*case_inputs(reference_fixture, c)) for c in reference_golden["cases"]]
    for method, budget in (("none", None), ("lightvla", 25)):
        policy.set_pruning(method, budget)
        try:
            batch = policy.predict_batch(observations)
            singles = [policy.predict_batch([o])[0] for o in observations]
        finally:
            policy.set_pruning("lightvla", None)
        for b, s in zip(batch, singles):
            assert b.kept_patch_indices.tolist() == s.kept_patch_indices.tolist()
            np.testing.assert_allclose(b.normalized_actions, s.normalized_actions, atol=1e-5)


def test_unpruned_model_keeps_every_patch_and_acts_differently(policy, reference_fixture, reference_golden):
    case = reference_golden["cases"][0]
    policy.set_pruning("none", None)
    try:
        out = policy.predict(*case_inputs(reference_fixture, case))
    finally:
        policy.set_pruning("lightvla", None)
    assert out.num_kept == 512 and out.kept_patch_indices.tolist() == list(range(512))
    assert out.flops["saved_fraction"] == pytest.approx(0.0)
    assert np.abs(out.normalized_actions - np.array(case["normalized_actions"])).max() > 1e-3


def test_budget_caps_kept_set_to_most_voted_patches(policy, reference_fixture, reference_golden):
    case = reference_golden["cases"][1]  # 40 kept without a budget
    votes = np.bincount(case["per_query_argmax"], minlength=512)
    policy.set_pruning("lightvla", 10)
    try:
        out = policy.predict(*case_inputs(reference_fixture, case))
    finally:
        policy.set_pruning("lightvla", None)
    assert out.num_kept == 10
    assert set(out.kept_patch_indices.tolist()) <= set(case["kept_patch_indices"])
    assert list(out.kept_patch_indices) == sorted(out.kept_patch_indices)
    threshold = np.sort(votes)[::-1][9]
    assert all(votes[i] >= threshold for i in out.kept_patch_indices)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_paths_run_on_cpu_and_stay_close(reference_fixture, reference_golden, dtype):
    """The GPU/Jetson dtypes run on the CPU too: nearly the same kept set, actions within half-precision noise
    (random tiny weights amplify rounding, hence the loose bound)."""
    case = reference_golden["cases"][0]
    half = LightVLAPolicy.from_checkpoint(reference_fixture, device="cpu", dtype=dtype, preprocessing="plain")
    out = half.predict(*case_inputs(reference_fixture, case))
    assert half.dtype == dtype and np.all(np.isfinite(out.actions))
    assert len(set(out.kept_patch_indices) ^ set(case["kept_patch_indices"])) <= 4
    assert np.abs(out.normalized_actions - np.array(case["normalized_actions"])).mean() < 0.1

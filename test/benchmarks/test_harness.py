"""The benchmark's measuring pieces: exact-K pruning, the authors' path re-enactment, round-robin runs, buckets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import load_rgb

from benchmarks.harness import (
    STAGES,
    Scenario,
    build_subject,
    default_scenarios,
    make_inputs,
    paired_ratio,
    run,
)
from lightvla_ros.model.acceleration import DEFAULT_BUCKETS, Acceleration, accelerate
from lightvla_ros.model.pruning import TokenPruner, steer_to_count


@pytest.fixture(scope="module")
def subject():
    return build_subject("tiny", None, torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def inputs(subject):
    return make_inputs(subject.policy, camera_shape=(48, 64))


def forward(subject, inputs, scenario):
    subject.configure(scenario)
    with torch.inference_mode():
        return subject.model(inputs.pixel_values, inputs.text_ids, inputs.text_lengths, inputs.state)


@pytest.mark.parametrize("count", [1, 16, 78, 512])
def test_steered_scores_pick_exactly_the_best_scored_patches(count):
    scores = torch.randn(2, 512, 512)
    picks = steer_to_count(scores, count).argmax(-1)
    for b in range(2):
        assert set(picks[b].tolist()) == set(scores[b].amax(dim=0).topk(count).indices.tolist())


@pytest.mark.parametrize("count", [1, 78, 512])
def test_fixed_count_scenarios_keep_exactly_count_tokens_in_order(subject, inputs, count):
    out = forward(subject, inputs, Scenario("k", "ours", "lightvla", count))
    kept = out.kept_patch_indices[0].tolist()
    assert len(kept) == count and kept == sorted(kept)
    assert out.sequence_lengths[0] == 1 + count + inputs.text_ids.shape[1]  # BOS, kept, proprio, text without BOS


@pytest.mark.parametrize("scenario", [Scenario("u", "ours", "none"), Scenario("k", "ours", "lightvla", 78),
                                      Scenario("l", "ours", "lightvla")])
def test_authors_path_computes_the_same_actions(subject, inputs, scenario):
    ours = forward(subject, inputs, scenario)
    with torch.inference_mode():
        ids, pixels, state = subject.authors.preprocess(inputs.images, inputs.instruction, inputs.proprio)
        theirs, kept, length = subject.authors.forward(ids, pixels, state)
    assert kept == len(ours.kept_patch_indices[0]) and length == ours.sequence_lengths[0]
    np.testing.assert_allclose(theirs, ours.normalized_actions[0].numpy(), atol=1e-5)


@pytest.mark.golden
def test_authors_path_reproduces_the_reference_goldens(reference_fixture, reference_golden):
    """On the fixture checkpoint the re-enacted reference path gives the reference code's own actions."""
    checkpoint = build_subject(None, str(reference_fixture), torch.device("cpu"), torch.float32)
    for case in reference_golden["cases"]:
        images = [load_rgb(reference_fixture / name) for name in case["images"]]
        with torch.inference_mode():
            actions = checkpoint.authors.predict(images, case["instruction"], np.array(case["proprio_raw"]))
        np.testing.assert_allclose(actions, case["actions"], atol=1e-4)


def test_round_robin_run_collects_every_stage_per_round(subject, inputs):
    scenarios = [s for s in default_scenarios((16, 78)) if s.name in ("unpruned", "k78", "authors-k78")]
    subject.configure(Scenario("natural", "ours", "lightvla"))
    results = run(subject, inputs, scenarios, reps=2, warmup=1)
    assert [r.scenario.name for r in results] == ["unpruned", "k78", "authors-k78"]
    for r in results:
        assert all(len(r.samples[k]) == 2 for k in (*STAGES, "forward", "preprocess", "e2e", "other"))
        assert r.flops["total"] > 0 and r.sequence_length > r.kept
    unpruned, k78, authors = results
    assert (k78.kept, unpruned.kept) == (78, 512)
    assert authors.flops["lm_head"] > 0 and k78.flops["lm_head"] == 0
    assert paired_ratio(k78, unpruned, "llm").n == 2
    assert type(subject.model.pruner) is TokenPruner and subject.model.pruning.method == "lightvla"  # restored


def test_bucketed_and_compiled_paths_give_the_same_actions(inputs):
    fresh = build_subject("tiny", None, torch.device("cpu"), torch.float32, authors=False)
    scenarios = [Scenario("k", "ours", "lightvla", 78), Scenario("l", "ours", "lightvla"), Scenario("u", "ours", "none")]
    reference = {s.name: forward(fresh, inputs, s) for s in scenarios}
    accelerate(fresh.model, Acceleration("default", DEFAULT_BUCKETS, backend="eager"))
    for s in scenarios:
        out = forward(fresh, inputs, s)
        assert out.sequence_lengths == reference[s.name].sequence_lengths
        assert torch.equal(out.kept_patch_indices[0], reference[s.name].kept_patch_indices[0])
        torch.testing.assert_close(out.normalized_actions, reference[s.name].normalized_actions, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_bucketed_path_runs_on_cpu(inputs, dtype):
    """What a Jetson runs (eager, SDPA, fp16/bf16, bucketed kept counts), on the CPU."""
    half = build_subject("tiny", None, torch.device("cpu"), dtype)
    accelerate(half.model, Acceleration("none", DEFAULT_BUCKETS))
    data = make_inputs(half.policy, camera_shape=(48, 64))
    out = forward(half, data, Scenario("k", "ours", "lightvla", 78))
    assert out.normalized_actions.dtype == dtype and torch.isfinite(out.normalized_actions).all()
    assert len(out.kept_patch_indices[0]) == 78
    assert half.policy.predict(data.images, data.instruction, data.proprio).actions.shape == (8, 7)

"""The pruning study (``python -m experiments.pruning_study``): its entry point, where it writes, its baselines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO

from experiments.pruning_study import toy
from experiments.pruning_study.__main__ import build_parser
from experiments.pruning_study.baselines import AttentionTopK, RandomTopK, attention_received
from experiments.pruning_study.study import LABELS, PUBLISHED_REPORT, StudyConfig, ToyRunner, run_study
from lightvla_ros.policy import Observation
from lightvla_ros.training.statistics import compute_statistics


def test_no_run_writes_into_docs_unless_told_to():
    assert StudyConfig(quick=True).report == "build/pruning-study-quick/pruning-study.md"
    assert StudyConfig().report == "build/pruning-study/pruning-study.md"
    assert StudyConfig(out="somewhere").report == "somewhere/pruning-study.md"
    assert StudyConfig(report=PUBLISHED_REPORT).report == "docs/pruning-study.md"
    args = build_parser().parse_args(["--quick"])
    assert args.out is None and args.report is None


def test_the_entry_point_runs_from_a_checkout():
    result = subprocess.run([sys.executable, "-m", "experiments.pruning_study", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "--quick" in result.stdout and "docs/pruning-study.md" in result.stdout


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory):
    """An untrained toy model with the statistics of a few expert episodes (what training would add)."""
    checkpoint = toy.make_toy_checkpoint(tmp_path_factory.mktemp("toy") / "ckpt", seed=0)
    statistics = compute_statistics(toy.make_episodes(20, seed=0), "toy", [True, True])
    (checkpoint / "dataset_statistics.json").write_text(json.dumps(statistics))
    return checkpoint


def _batch(runner: ToyRunner, count: int):
    rng = np.random.default_rng(4)
    scenes = [toy.sample_scene(rng) for _ in range(count)]
    states = np.stack([toy.random_start(rng) for _ in scenes]).astype(np.float32)
    return [[toy.render(s, x)] for s, x in zip(scenes, states)], [s.instruction for s in scenes], states


@pytest.mark.parametrize("mode", ["fastv", "random"])
def test_training_free_baselines_keep_exactly_k_tokens_in_order(toy_checkpoint, mode):
    runner = ToyRunner(toy_checkpoint, mode, k=5)
    normalized, kept = runner.predict(*_batch(runner, 3))
    assert normalized.shape == (3, 4, toy.ACTION_DIM) and np.isfinite(normalized).all()
    assert [len(k) for k in kept] == [5, 5, 5] and all(list(k) == sorted(k) for k in kept)


def test_fastv_ranks_by_the_attention_the_action_slots_pay_in_the_layer_before(toy_checkpoint):
    runner = ToyRunner(toy_checkpoint, "none", k=None)
    model = runner.model
    seen = {}

    class Spy(AttentionTopK):
        def __call__(self, inputs):
            seen["received"] = attention_received(model.llm.layers[0], inputs.previous, inputs.previous.slot_positions)
            seen["keep"] = super().__call__(inputs)
            return seen["keep"]

    images, instructions, states = _batch(runner, 2)
    args = runner.policy.prepare([Observation(*o) for o in zip(images, instructions, states)])
    with torch.no_grad():
        model(*args, token_filter=Spy(model, 3, layer=1))
    received = seen["received"]
    torch.testing.assert_close(received.sum(-1), torch.ones(2))  # probabilities over the sequence
    visual = received[:, 1:17]
    for b in range(2):
        assert set(torch.nonzero(seen["keep"][b]).flatten().tolist()) == set(visual[b].topk(3).indices.tolist())


def test_random_baseline_draws_from_its_own_generator():
    def draw(seed):
        inputs = type("Inputs", (), {"visual_valid": torch.ones(2, 16, dtype=torch.bool), "hidden": torch.zeros(1)})
        return RandomTopK(4, generator=torch.Generator().manual_seed(seed))(inputs)

    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))
    assert draw(1).sum(-1).tolist() == [4, 4]


@pytest.mark.slow
def test_quick_study_writes_a_report_with_every_method(tmp_path):
    report = tmp_path / "docs" / "pruning-study.md"
    results = run_study(StudyConfig(out=str(tmp_path / "run"), report=str(report), seeds=1, quick=True))
    text = report.read_text()
    for label in LABELS.values():
        assert f"| {label} |" in text
    assert "## Verdict" in text and text.count("**Confirmed") + text.count("**Refuted") + text.count("**Partly") == 4
    assert (tmp_path / "docs" / "img" / "pruning-study-training.png").stat().st_size > 10_000
    assert (tmp_path / "docs" / "img" / "pruning-study-kept-tokens.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {r["method"] for r in saved["runs"]} == {"none", "lightvla", "lightvla_star"}
    assert {b["method"] for b in saved["baselines"]} == {"fastv", "random"}
    assert results["flops"]["lightvla"] < results["flops"]["none"]
    assert Path(saved["runs"][0]["checkpoint"]).joinpath("model.safetensors").exists()

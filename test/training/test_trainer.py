"""The trainer on the toy model: the loss falls, gradients reach the selection, the noise anneals to zero,
checkpoints reload with identical predictions (full and LoRA-merged), and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.pruning_study import toy
from lightvla_ros.model.checkpoint import load_model
from lightvla_ros.model.configuration import PruningConfig
from lightvla_ros.policy import LightVLAPolicy
from lightvla_ros.training.trainer import STATE_FILE, TrainConfig, Trainer

EPISODES = toy.make_episodes(24, seed=11)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return toy.make_toy_checkpoint(tmp_path_factory.mktemp("toy") / "base", seed=0)


def _config(base: Path, out: Path, **overrides) -> TrainConfig:
    options = dict(checkpoint=str(base), out=str(out), steps=4, batch_size=8, lr=1e-3, lora_rank=0, num_workers=0, log_every=1,
                   save_every=0, save_dtype="float32", progress=False, device="cpu", seed=3)
    options.update(overrides)
    return TrainConfig(**options)


def _trainer(config: TrainConfig) -> Trainer:
    return Trainer(config, episodes=EPISODES, log=lambda text: None)


def _batch(trainer: Trainer, n: int = 6):
    trainer.dataset.augmentation = None
    from lightvla_ros.training.dataset import collate

    return collate([trainer.dataset[i] for i in range(n)], trainer.model.config.pad_token_id)


@pytest.mark.slow
def test_loss_falls_and_noise_anneals_to_zero(base, tmp_path):
    torch.manual_seed(0)
    trainer = _trainer(_config(base, tmp_path / "run", steps=30, augment=False, lr=2e-3))
    trainer.run()
    losses = [row["loss"] for row in trainer.history]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    noise = [row["noise_scale"] for row in trainer.history]
    assert noise[0] == 1.0 and noise[-1] == 0.0 and all(a >= b for a, b in zip(noise, noise[1:]))
    lines = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("step,loss,lr,noise_scale,kept_tokens") and len(lines) == 31


@pytest.mark.parametrize("method", ["lightvla", "lightvla_star"])
def test_gradients_reach_the_selection(base, tmp_path, method):
    """The forward pass copies the argmax patches; the backward pass reaches the scores (softmax path), hence the
    patches and task tokens that produced them, and LightVLA*'s learnable queries."""
    trainer = _trainer(_config(base, tmp_path / method, pruning=method, star_num_queries=8, star_llm_layer=1))
    batch = _batch(trainer)
    out = trainer.model(batch.pixel_values, batch.text_ids, batch.text_lengths, batch.proprio, noise_scale=0.5)
    loss = (out.normalized_actions - batch.actions).abs().mean()
    (score_grad,) = torch.autograd.grad(loss, out.scores, retain_graph=True)
    assert score_grad.abs().sum() > 0
    loss.backward()
    if method == "lightvla_star":
        assert trainer.model.star_pruner.queries.grad.abs().sum() > 0
    assert trainer.model.vision_backbone.featurizer.patch_embed.proj.weight.grad.abs().sum() > 0


def test_straight_through_forward_copies_the_picked_patches(base, tmp_path):
    """Training mode keeps one slot per query holding an exact copy of the patch it picked (duplicates allowed)."""
    trainer = _trainer(_config(base, tmp_path / "copy"))
    batch = _batch(trainer, 2)
    model = trainer.model
    seen = {}

    def capture(module, args, kwargs):
        seen["hidden"] = args[0] if args else kwargs["hidden_states"]

    handle = model.llm.layers[0].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        out = model(batch.pixel_values, batch.text_ids, batch.text_lengths, batch.proprio, noise_scale=0.3)
    finally:
        handle.remove()
    with torch.no_grad():
        patches = model.projector(model.vision_backbone(batch.pixel_values, 1).features)
    n = out.num_patches
    expected = patches.gather(1, out.per_query_argmax[..., None].expand(-1, -1, patches.shape[-1]))
    torch.testing.assert_close(seen["hidden"][:, 1 : 1 + n], expected, rtol=0, atol=1e-6)


def _predictions(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(batch.pixel_values, batch.text_ids, batch.text_lengths, batch.proprio).normalized_actions


@pytest.mark.parametrize("lora", [0, 4], ids=["full", "lora-merged"])
def test_saved_checkpoint_reloads_with_identical_predictions(base, tmp_path, lora):
    trainer = _trainer(_config(base, tmp_path / "run", lora_rank=lora, lora_alpha=8, steps=3))
    final = trainer.run()
    batch = _batch(trainer)
    expected = _predictions(trainer.model, batch)
    reloaded, _ = load_model(final, PruningConfig("lightvla"))
    got = _predictions(reloaded, batch)
    if lora:  # merged W + BA differs from the adapter's separate products by float rounding only
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(got, expected)
    statistics = json.loads((final / "dataset_statistics.json").read_text())
    assert statistics["dataset"]["action"]["mask"] == [True] * (toy.ACTION_DIM - 1) + [False]  # default gripper_dims [-1]
    assert not (final / STATE_FILE).exists() and (tmp_path / "run" / "checkpoints" / "step-000003" / STATE_FILE).is_file()
    policy = LightVLAPolicy.from_checkpoint(final, device="cpu", center_crop=True)
    scene = toy.sample_scene(np.random.default_rng(0))
    state = np.full(toy.STATE_DIM, 0.5)
    out = policy.predict([toy.render(scene, state)], scene.instruction, state)
    assert out.actions.shape == (4, toy.ACTION_DIM) and 1 <= out.num_kept <= (toy.IMAGE_SIZE // toy.PATCH_SIZE) ** 2


def test_lightvla_star_checkpoint_keeps_its_queries(base, tmp_path):
    trainer = _trainer(_config(base, tmp_path / "star", pruning="lightvla_star", star_num_queries=8, star_llm_layer=1, steps=2))
    final = trainer.run()
    batch = _batch(trainer)
    expected = _predictions(trainer.model, batch)
    reloaded, files = load_model(final, PruningConfig("lightvla_star"))
    assert files.star_pruner is not None and reloaded.pruning.star_llm_layer == 1
    assert torch.equal(_predictions(reloaded, batch), expected)


def test_resumed_run_equals_uninterrupted_run(base, tmp_path):
    straight = _trainer(_config(base, tmp_path / "straight", steps=4))
    straight.run()
    interrupted = _trainer(_config(base, tmp_path / "resumed", steps=4, save_every=2))
    interrupted.run(until=2)
    resumed = Trainer(_config(base, tmp_path / "resumed", steps=4, save_every=2), episodes=EPISODES, resume=tmp_path / "resumed",
                      log=lambda text: None)
    assert resumed.step == 2
    resumed.run()
    for (name, a), b in zip(straight.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), name
    assert [r["step"] for r in resumed.history] == [3, 4]


def test_gradient_accumulation_matches_a_bigger_batch(base, tmp_path):
    """Two micro-batches of 4 accumulate to the step one batch of 8 takes (same samples, same augmentation)."""
    big = _trainer(_config(base, tmp_path / "big", steps=2, batch_size=8, pruning="none"))
    big.run()
    small = _trainer(_config(base, tmp_path / "small", steps=2, batch_size=4, grad_accum=2, pruning="none"))
    small.run()
    diff = torch.cat([(a - b).detach().abs().flatten() for a, b in zip(big.model.parameters(), small.model.parameters())])
    # Adam steps ~lr, so where a gradient is ~0 its sign may differ by rounding: a few elements, by at most two steps
    assert float(diff.max()) <= 2 * 2e-3 and float((diff > 1e-6).float().mean()) < 1e-3

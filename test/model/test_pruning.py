"""Behaviour of the pruners and of the training path (straight-through selection, noise, LightVLA*)."""

from __future__ import annotations

import math

import pytest
import torch

from lightvla_ros.model.checkpoint import load_model, save_checkpoint
from lightvla_ros.model.configuration import PruningConfig
from lightvla_ros.model.errors import InputError
from lightvla_ros.model.presets import random_model, tiny_config
from lightvla_ros.model.pruning import (
    LearnableQueryPruner,
    TokenPruner,
    VisualTokens,
    linear_noise_scale,
    select,
    union_keep_mask,
    weightless_rms_norm,
)


def test_weightless_rms_norm_has_unit_rms_and_keeps_dtype():
    x = torch.randn(3, 5, 64, dtype=torch.bfloat16) * 7
    y = weightless_rms_norm(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float().pow(2).mean(-1), torch.ones(3, 5), atol=2e-2, rtol=0)
    assert torch.equal(weightless_rms_norm(torch.zeros(2, 8)), torch.zeros(2, 8)), "zeroed action slots stay zero"


def test_scores_are_bounded_by_sqrt_dim():
    patches, task = torch.randn(2, 30, 64), torch.randn(2, 9, 64)
    scores = TokenPruner().scores(patches, task, None)
    assert scores.shape == (2, 30, 30)
    assert scores.abs().max() <= math.sqrt(64) + 1e-4


def test_padded_task_tokens_do_not_change_queries():
    patches, task = torch.randn(1, 20, 32), torch.randn(1, 6, 32)
    padded = torch.cat([task, torch.randn(1, 4, 32)], dim=1)
    mask = torch.tensor([[True] * 6 + [False] * 4])
    torch.testing.assert_close(TokenPruner().scores(patches, padded, mask), TokenPruner().scores(patches, task, None))


def test_union_keeps_each_picked_patch_once_in_ascending_order():
    picks = torch.tensor([[4, 1, 4, 7, 1]])
    keep = union_keep_mask(picks, torch.zeros(1, 5, 9), 9, None)
    assert keep.nonzero()[:, 1].tolist() == [1, 4, 7]
    tokens = VisualTokens.dense(torch.arange(9.0).reshape(1, 9, 1))
    kept = select(torch.nn.functional.one_hot(picks, 9).float(), straight_through=False).apply(tokens)
    assert kept.patch_index.tolist() == [[1, 4, 7]], "kept tokens keep their original patch index (RoPE position)"


def test_budget_prefers_most_voted_then_best_score():
    picks = torch.tensor([[2, 2, 2, 5, 5, 8, 0]])
    scores = torch.zeros(1, 7, 9)
    scores[0, 5, 8], scores[0, 6, 0] = 3.0, 1.0  # 8 and 0 each have one vote; 8 scores higher
    keep = union_keep_mask(picks, scores, 9, max_kept=3)
    assert keep.nonzero()[:, 1].tolist() == [2, 5, 8]


def test_batch_pads_differently_sized_kept_sets():
    scores = torch.zeros(2, 3, 6)
    scores[0, :, 1] = 1  # sample 0: every query picks patch 1
    scores[1, 0, 2], scores[1, 1, 4], scores[1, 2, 5] = 1, 1, 1
    kept = select(scores, straight_through=False).apply(VisualTokens.dense(torch.randn(2, 6, 4)))
    assert kept.valid.tolist() == [[True, False, False], [True, True, True]]
    assert kept.patch_index[1].tolist() == [2, 4, 5]


def test_straight_through_forward_is_the_hard_selection_and_gradients_reach_patches():
    torch.manual_seed(0)
    patches = torch.randn(2, 16, 32, requires_grad=True)
    task = torch.randn(2, 5, 32)
    scores = TokenPruner().scores(patches, task, None)
    selection = select(scores, straight_through=True)
    out = selection.apply(VisualTokens.dense(patches))
    assert out.features.shape == (2, 16, 32), "training keeps one slot per query (duplicates allowed)"
    hard = patches.detach().gather(1, selection.picks[..., None].expand(-1, -1, 32))
    torch.testing.assert_close(out.features.detach(), hard)
    assert out.patch_index.tolist() == selection.picks.tolist(), "a slot carries its chosen patch's position"
    out.features.pow(2).sum().backward()
    assert patches.grad is not None and patches.grad.abs().sum() > 0
    # the selection itself gets gradient: the scores' softmax path (not only the copied values)
    scores_leaf = scores.detach().requires_grad_(True)
    sel = select(scores_leaf, straight_through=True)
    sel.apply(VisualTokens.dense(patches.detach())).features.sum().backward()
    assert scores_leaf.grad.abs().sum() > 0


def test_noise_anneals_linearly_to_zero_and_only_perturbs_training():
    assert [linear_noise_scale(s, 4) for s in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    scores = torch.zeros(1, 50, 50)
    scores[..., 0] = 0.5  # noise of scale 1 flips some picks away from patch 0
    gen = torch.Generator().manual_seed(0)
    noisy = select(scores, straight_through=True, noise_scale=1.0, generator=gen)
    clean = select(scores, straight_through=True, noise_scale=0.0)
    assert (noisy.picks != 0).any() and (clean.picks == 0).all()
    gumbel = select(scores, straight_through=True, noise_scale=1.0, noise="gumbel", generator=gen)
    assert (gumbel.picks != 0).any()


@pytest.fixture(scope="module")
def tiny_cfg():
    return tiny_config(vocab_size=448, prefix_token_id=5, hidden=32, layers=4)


def _batch(cfg, batch=2):
    torch.manual_seed(1)
    pixels = torch.randn(batch, 12, 224, 224)
    ids = torch.randint(4, 400, (batch, 12 + cfg.num_action_slots + 1))
    return pixels, ids, torch.full((batch,), ids.shape[1]), torch.randn(batch, 8)


@pytest.mark.parametrize("layout", [dict(star_position="llm", star_llm_layer=k) for k in range(4)]
                         + [dict(star_position="vision", star_vision_block=0)])
def test_lightvla_star_trains_its_queries_and_prunes_at_inference(tiny_cfg, layout):
    model = random_model(tiny_cfg, PruningConfig("lightvla_star", star_num_queries=24, **layout))
    pixels, ids, lengths, proprio = _batch(tiny_cfg)
    model.train()
    out = model(pixels, ids, lengths, proprio, noise_scale=0.5)
    out.normalized_actions.sum().backward()
    assert model.star_pruner.queries.grad is not None and model.star_pruner.queries.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(pixels, ids, lengths, proprio)
    per_image = 24 if layout["star_position"] == "vision" else 0
    for kept in out.kept_patch_indices:
        assert 1 <= len(kept) <= (2 * per_image or 24)
        assert kept.tolist() == sorted(kept.tolist())


def test_lightvla_star_queries_save_and_load_with_the_checkpoint(tiny_cfg, random_tiny_checkpoint, tmp_path):
    model, files = load_model(random_tiny_checkpoint, PruningConfig("lightvla"))
    star = random_model(model.config, PruningConfig("lightvla_star", star_num_queries=16, star_llm_layer=1))
    star.load_state_dict(model.state_dict(), strict=False)
    save_checkpoint(star, tmp_path / "star", step=7, source=files)
    assert (tmp_path / "star" / "lightvla_star--7_checkpoint.pt").is_file()
    loaded, _ = load_model(tmp_path / "star")
    assert loaded.pruning.method == "lightvla_star" and loaded.pruning.star_llm_layer == 1
    torch.testing.assert_close(loaded.star_pruner.queries, star.star_pruner.queries.float())
    loaded.set_pruning(PruningConfig("lightvla"))  # the parameter-free pruner is always available
    loaded.set_pruning(PruningConfig("lightvla_star", max_kept_tokens=4))
    assert loaded.pruning.star_llm_layer == 1 and loaded.pruning.max_kept_tokens == 4


def test_star_pruner_needs_star_weights(random_tiny_checkpoint):
    model, _ = load_model(random_tiny_checkpoint)
    with pytest.raises(InputError, match="no LightVLA\\* queries"):
        model.set_pruning(PruningConfig("lightvla_star"))


def test_learnable_query_pruner_projects_llm_task_tokens_to_vit_width():
    pruner = LearnableQueryPruner(8, dim=48, task_dim=64)
    scores = pruner.scores(torch.randn(2, 30, 48), torch.randn(2, 7, 64), None)
    assert scores.shape == (2, 8, 30)


def test_invalid_pruning_settings_are_refused():
    with pytest.raises(InputError):
        PruningConfig("fastest")
    with pytest.raises(InputError):
        PruningConfig("lightvla", max_kept_tokens=0)
    with pytest.raises(InputError):
        PruningConfig("lightvla_star", star_llm_layer=5)

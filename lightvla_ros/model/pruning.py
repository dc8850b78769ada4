"""Visual-token pruning: LightVLA's parameter-free pruner and LightVLA*'s learnable-query pruner.

Both score every visual patch against a set of task-conditioned queries (docs/model-notes.md §4):

    P^ = RMS(P), T^ = RMS(T)                    weightless RMS norm, eps 1e-6, computed in float32
    Q  = softmax(P^ T^T / sqrt(D)) T^           one query per patch (LightVLA) or per learnable vector (LightVLA*)
    S  = RMS(Q) P^T / sqrt(D)                   (queries x patches)

Inference keeps the union of the per-query argmaxes, in ascending patch order, with the patches' original
position ids (model-notes §5). Training keeps one slot per query, filled by a straight-through selection: the
forward value is the one-hot argmax of the noisy scores, the gradient is that of their softmax (model-notes §6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lightvla_ros.model.configuration import NOISE_KINDS
from lightvla_ros.model.errors import InputError

PRUNER_RMS_EPS = 1e-6


def weightless_rms_norm(x: torch.Tensor, eps: float = PRUNER_RMS_EPS) -> torch.Tensor:
    """RMS norm without a learned scale, in float32, cast back to the input dtype (as the reference does)."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def task_conditioned_queries(query_seed: torch.Tensor, task: torch.Tensor, task_mask: torch.Tensor | None) -> torch.Tensor:
    """Parameter-free single-head cross-attention of (normed) query seeds to (normed) task tokens.

    ``task_mask`` (B, L_t) marks real task tokens; padding of shorter prompts in a batch is masked out so a
    batch gives the same queries as its samples run alone.
    """
    attn_mask = None if task_mask is None or bool(task_mask.all()) else task_mask[:, None, :]
    return F.scaled_dot_product_attention(query_seed, task, task, attn_mask=attn_mask)


def selection_scores(queries: torch.Tensor, patches_normed: torch.Tensor) -> torch.Tensor:
    """S = RMS(Q) P^T / sqrt(D): cosine similarity times sqrt(D), shape (B, M, N)."""
    return weightless_rms_norm(queries) @ patches_normed.transpose(-1, -2) / math.sqrt(patches_normed.shape[-1])


def selection_noise(scores: torch.Tensor, scale: float, kind: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Exploration noise added to the scores in training.

    ``uniform`` is what the released code does (U[0,1) times the scale); ``gumbel`` is what the paper's text
    describes (-log(-log U) times the scale).
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}")
    u = torch.rand(scores.shape, generator=generator, device=scores.device, dtype=torch.float32)
    if kind == "gumbel":
        exponential = (-torch.log(u.clamp_min(1e-10))).clamp_min(1e-10)
        u = -torch.log(exponential)
    return (u * scale).to(scores.dtype)


def linear_noise_scale(step: int, total_steps: int) -> float:
    """Noise scale annealed linearly from 1 at step 0 to 0 at ``total_steps`` (the trainer's schedule)."""
    if total_steps <= 0:
        return 0.0
    return max(0.0, 1.0 - step / total_steps)


def union_keep_mask(picks: torch.Tensor, scores: torch.Tensor, num_patches: int, max_kept: int | None) -> torch.Tensor:
    """Keep-mask (B, N) of the patches picked by at least one query, optionally capped at ``max_kept``.

    Under a cap, patches picked by more queries win; ties go to the higher best score among their pickers.
    """
    batch = picks.shape[0]
    counts = torch.zeros(batch, num_patches, dtype=torch.int64, device=picks.device)
    counts.scatter_add_(1, picks, torch.ones_like(picks))
    keep = counts > 0
    if max_kept is None or int(keep.sum(-1).max()) <= max_kept:
        return keep
    picked_scores = scores.gather(-1, picks[..., None]).squeeze(-1).float()
    best = torch.full((batch, num_patches), -math.inf, device=picks.device)
    best.scatter_reduce_(1, picks, picked_scores, reduce="amax")
    by_score = best.argsort(dim=-1, descending=True, stable=True)
    by_count = counts.gather(1, by_score).argsort(dim=-1, descending=True, stable=True)
    ranked = by_score.gather(1, by_count)[:, :max_kept]
    capped = torch.zeros_like(keep)
    capped.scatter_(1, ranked, True)
    return capped & keep


@dataclass
class VisualTokens:
    """Visual tokens on their way to the LLM, each remembering which original patch it is (for RoPE positions)."""

    features: torch.Tensor  # (B, T, D)
    patch_index: torch.Tensor  # (B, T) int64, index into all patches of all images
    valid: torch.Tensor  # (B, T) bool; False marks padding of samples that kept fewer tokens

    @classmethod
    def dense(cls, features: torch.Tensor, offset: int = 0) -> "VisualTokens":
        batch, count, _ = features.shape
        index = torch.arange(offset, offset + count, device=features.device).expand(batch, count)
        return cls(features, index, torch.ones(batch, count, dtype=torch.bool, device=features.device))

    def padded(self, width: int) -> "VisualTokens":
        """The same tokens followed by masked zero slots up to ``width`` (no-op when already that wide)."""
        extra = width - self.features.shape[1]
        if extra <= 0:
            return self
        batch = self.features.shape[0]
        zeros = self.features.new_zeros(batch, extra, self.features.shape[-1])
        return VisualTokens(
            torch.cat([self.features, zeros], dim=1),
            torch.cat([self.patch_index, self.patch_index.new_zeros(batch, extra)], dim=1),
            torch.cat([self.valid, self.valid.new_zeros(batch, extra)], dim=1),
        )

    def kept(self, keep: torch.Tensor) -> "VisualTokens":
        """The tokens where ``keep`` (B, T) is True, in their order, padded per sample to the largest count."""
        counts = keep.sum(-1)
        width = max(int(counts.max()), 1)
        order = torch.argsort((~keep).to(torch.int8), dim=-1, stable=True)[:, :width]  # kept first, ascending
        valid = torch.arange(width, device=order.device)[None, :] < counts[:, None]
        features = self.features.gather(1, order[..., None].expand(-1, -1, self.features.shape[-1]))
        features = features * valid[..., None].to(features.dtype)
        return VisualTokens(features, self.patch_index.gather(1, order), valid)


@dataclass
class Selection:
    """The outcome of one pruning decision, applicable to any tensor aligned with the scored patches."""

    scores: torch.Tensor | None  # (B, M, N) noise-free scores (None when assembled from per-image selections)
    picks: torch.Tensor  # (B, M) per-query argmax of the (noisy, in training) scores
    keep: torch.Tensor  # (B, N) bool, union of picks (capped); what inference keeps
    straight_through: torch.Tensor | None  # (B, M, N) training weights: forward one-hot, backward softmax

    def apply(self, tokens: VisualTokens) -> VisualTokens:
        """Gather the selected tokens: one slot per query in training, the ascending kept set at inference."""
        if self.straight_through is not None:
            features = self.straight_through.to(tokens.features.dtype) @ tokens.features
            return VisualTokens(features, tokens.patch_index.gather(1, self.picks), torch.ones_like(self.picks, dtype=torch.bool))
        return tokens.kept(self.keep)

    def kept_patch_indices(self, patch_index: torch.Tensor) -> list[torch.Tensor]:
        """Per sample, the ascending original indices of the kept patches."""
        return [patch_index[b][self.keep[b]] for b in range(self.keep.shape[0])]


def select(
    scores: torch.Tensor,
    *,
    straight_through: bool,
    noise_scale: float = 0.0,
    noise: str = "uniform",
    max_kept: int | None = None,
    generator: torch.Generator | None = None,
) -> Selection:
    """Turn scores (B, M, N) into a selection: hard union at inference, straight-through in training."""
    noisy = scores + selection_noise(scores, noise_scale, noise, generator) if noise_scale > 0 else scores
    picks = noisy.argmax(-1)
    keep = union_keep_mask(picks, scores, scores.shape[-1], max_kept)
    weights = None
    if straight_through:
        soft = noisy.float().softmax(-1)
        hard = F.one_hot(picks, scores.shape[-1]).to(soft.dtype)
        weights = hard + soft - soft.detach()
    return Selection(scores, picks, keep, weights)


class TokenPruner(nn.Module):
    """LightVLA's pruner: one parameter-free query per visual token, conditioned on the task tokens."""

    def scores(self, patches: torch.Tensor, task: torch.Tensor, task_mask: torch.Tensor | None) -> torch.Tensor:
        patches_n = weightless_rms_norm(patches)
        queries = task_conditioned_queries(patches_n, weightless_rms_norm(task), task_mask)
        return selection_scores(queries, patches_n)


class LearnableQueryPruner(nn.Module):
    """LightVLA*'s pruner: a learned set of query vectors, each conditioned on the task tokens by the same
    parameter-free cross-attention and added back to its seed, each picking one patch.

    ``task_dim`` differs from ``dim`` when the pruner sits inside the vision encoder (ViT width vs LLM width);
    a bias-free linear map then brings the task tokens to the ViT width.
    """

    def __init__(self, num_queries: int, dim: int, task_dim: int | None = None) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_queries, dim) / math.sqrt(dim))
        self.task_proj = nn.Linear(task_dim, dim, bias=False) if task_dim not in (None, dim) else None

    def scores(self, patches: torch.Tensor, task: torch.Tensor, task_mask: torch.Tensor | None) -> torch.Tensor:
        if self.task_proj is not None:
            task = self.task_proj(task.to(self.task_proj.weight.dtype))
        seed = self.queries.to(patches.dtype).expand(patches.shape[0], -1, -1)
        task_n = weightless_rms_norm(task.to(patches.dtype))
        queries = seed + task_conditioned_queries(weightless_rms_norm(seed), task_n, task_mask)
        return selection_scores(queries, weightless_rms_norm(patches))


class FixedCountPruner(TokenPruner):
    """LightVLA's full scoring, then exactly ``count`` kept patches (benchmarks, and warm-up of kept-token buckets).

    A random-weight model keeps however many patches its union of per-query argmaxes happens to give, and the
    ``max_kept_tokens`` cap can only lower that. To time the LLM on exactly K visual tokens, this pruner computes
    the real scores (the same work as the real pruner) and then steers every query's argmax to one of the K
    patches with the highest best score. The union is then exactly those K patches, gathered in ascending order
    with their original positions by the unchanged selection code. The steering is O(N^2) elementwise, against
    the O(N^2 * D) scoring; the returned scores are the steered ones.
    """

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    def scores(self, patches: torch.Tensor, task: torch.Tensor, task_mask: torch.Tensor | None) -> torch.Tensor:
        return steer_to_count(super().scores(patches, task, task_mask), self.count)


def steer_to_count(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Scores (B, M, N) whose per-query argmaxes cover exactly the ``count`` patches with the highest best score."""
    num_queries, num_patches = scores.shape[-2:]
    if not 1 <= count <= min(num_patches, num_queries):
        raise InputError(f"cannot keep exactly {count} of {num_patches} patches with {num_queries} queries")
    chosen = scores.amax(dim=-2).topk(count, dim=-1).indices  # (B, K): best score over the queries
    target = chosen[:, torch.arange(num_queries, device=scores.device) % count]  # every chosen patch gets a query
    return scores.scatter(-1, target[..., None], scores.amax(dim=-1, keepdim=True) + 1)

"""Analytic FLOPs per stage (vision, projector, pruner, LLM, head) for any configuration and kept-token count.

Counted as 2 x multiply-accumulates of the matrix products (norms, activations and softmaxes are ignored:
they are < 1% here). The LM head is not counted because this implementation never evaluates it; the reference
code does, which ``include_lm_head=True`` reproduces for comparison with the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lightvla_ros.model.configuration import VLAConfig

# Llama-2-7B's LIBERO prompt is 20-35 tokens; this is the fixture's first case (with BOS).
TYPICAL_PROMPT_TOKENS = 34

@dataclass
class FlopsBreakdown:
    vision: float
    projector: float
    pruner: float
    llm: float
    head: float
    lm_head: float
    sequence_length: int
    num_kept: int

    @property
    def total(self) -> float:
        return self.vision + self.projector + self.pruner + self.llm + self.head + self.lm_head

    def as_dict(self) -> dict[str, float]:
        return {"vision": self.vision, "projector": self.projector, "pruner": self.pruner, "llm": self.llm,
                "head": self.head, "lm_head": self.lm_head, "total": self.total,
                "sequence_length": self.sequence_length, "num_kept": self.num_kept}


@dataclass
class ModelShape:
    """The sizes FLOPs depend on, read off an instantiated (possibly meta-device) model."""

    vits: list[tuple[int, int, int, int, int]]  # (width, blocks run, mlp hidden, tokens incl. prefix, patch pixels)
    patches_per_image: int
    vision_dim: int
    llm_dim: int
    llm_layers: int
    attn_dim: int
    kv_dim: int
    mlp_dim: int
    vocab: int
    head_hidden: int
    action_dim: int
    chunk_len: int

    @classmethod
    def of(cls, model) -> "ModelShape":
        vits = []
        for vit in model.vision_backbone.featurizers:
            patch = vit.patch_embed.proj.weight
            tokens = vit.patch_embed.num_patches + vit.num_prefix_tokens
            vits.append((vit.embed_dim, len(vit.blocks) - 1, vit.blocks[0].mlp.fc1.out_features, tokens, patch[0].numel()))
        attn = model.llm.layers[0].self_attn
        return cls(
            vits=vits,
            patches_per_image=model.vision_backbone.patches_per_image,
            vision_dim=model.vision_backbone.embed_dim,
            llm_dim=model.config.llm_dim,
            llm_layers=len(model.llm.layers),
            attn_dim=attn.q_proj.out_features,
            kv_dim=attn.k_proj.out_features,
            mlp_dim=model.llm.layers[0].mlp.gate_proj.out_features,
            vocab=model.llm.embed_tokens.num_embeddings,
            head_hidden=model.action_head.model.fc1.out_features,
            action_dim=model.config.action_dim,
            chunk_len=model.config.chunk_len,
        )

    @classmethod
    def of_config(cls, config: VLAConfig) -> "ModelShape":
        from lightvla_ros.model.modeling import LightVLAForActionPrediction

        with torch.device("meta"):
            return cls.of(LightVLAForActionPrediction(config))


def count_flops(
    shape: ModelShape,
    num_images: int,
    num_kept: int | None,
    prompt_tokens: int = TYPICAL_PROMPT_TOKENS,
    use_proprio: bool = True,
    pruned: bool = True,
    include_lm_head: bool = False,
) -> FlopsBreakdown:
    """FLOPs of one forward pass. ``num_kept=None`` or ``pruned=False`` means every visual token is kept.

    ``prompt_tokens`` counts the tokenised prompt with BOS; 29871, the action slots and the stop token are added.
    """
    num_patches = shape.patches_per_image * num_images
    kept = num_patches if (num_kept is None or not pruned) else num_kept
    vision = 0.0
    for width, blocks, hidden, tokens, patch_pixels in shape.vits:
        per_token = 4 * width * width + 2 * width * hidden + 2 * tokens * width
        vision += num_images * (blocks * tokens * per_token + shape.patches_per_image * patch_pixels * width)
    projector = num_patches * (shape.vision_dim * 4 * shape.vision_dim + 4 * shape.vision_dim * shape.llm_dim + shape.llm_dim ** 2)
    task = int(use_proprio) + (prompt_tokens - 1) + 1 + shape.chunk_len * shape.action_dim + 1
    pruner = 0.0
    if pruned and num_kept is not None:
        pruner = 2 * num_patches * task * shape.llm_dim + num_patches * num_patches * shape.llm_dim
    length = 1 + kept + task
    per_token = shape.llm_dim * (2 * shape.attn_dim + 2 * shape.kv_dim) + 3 * shape.llm_dim * shape.mlp_dim + 2 * length * shape.attn_dim
    llm = shape.llm_layers * length * per_token
    hidden = shape.head_hidden
    head = shape.chunk_len * (shape.action_dim * shape.llm_dim * hidden + 2 * hidden ** 2 + hidden * shape.action_dim)
    lm_head = length * shape.llm_dim * shape.vocab if include_lm_head else 0.0
    return FlopsBreakdown(2 * vision, 2 * projector, 2 * pruner, 2 * llm, 2 * head, 2 * lm_head, length, kept)

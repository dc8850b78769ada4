"""Training-free pruners for comparison with learned pruning: FastV-style attention top-k, and random top-k.

Both run an unpruned model (trained with all tokens) and keep a fixed number ``k`` of visual tokens per sample:

- ``attention``: the LLM runs layers ``0 .. layer-1`` on all tokens; the visual tokens are ranked by the attention
  they receive in layer ``layer-1`` (softmax probabilities, averaged over heads) from the positions the action head
  reads (the action slots: in this parallel-decoding model they play the part of FastV's last token), and only
  the top ``k`` continue into layers ``layer ..``. FastV's rule, adapted to bidirectional parallel decoding.
- ``random``: ``k`` visual tokens drawn uniformly, before layer ``layer`` (0 = before the LLM, where LightVLA prunes).

Kept tokens keep their original order and RoPE positions, as in LightVLA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from lightvla_ros.model.modeling import LightVLAForActionPrediction
from lightvla_ros.model.pruning import Selection, VisualTokens


@dataclass
class TopKOutput:
    normalized_actions: torch.Tensor
    kept_patch_indices: list[torch.Tensor]


def slot_positions(model: LightVLAForActionPrediction, num_visual: int, task_mask: torch.Tensor) -> torch.Tensor:
    """(B, slots) sequence positions the action head reads (the same rule as the model's read-out)."""
    slots = model.config.num_action_slots
    end = 1 + num_visual + task_mask.sum(-1)
    start = end - slots - (2 if model.readout == "aligned" else 0)
    return start[:, None] + torch.arange(slots, device=task_mask.device)[None, :]


def attention_received(layer, hidden: torch.Tensor, rope, mask: torch.Tensor | None, queries: torch.Tensor) -> torch.Tensor:
    """(B, L) attention probability each position receives in ``layer`` from the ``queries`` rows, head-averaged."""
    attn = layer.self_attn
    x = layer.input_layernorm(hidden)
    batch, length, _ = x.shape
    q = attn.q_proj(x).view(batch, length, -1, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(x).view(batch, length, -1, attn.head_dim).transpose(1, 2)
    cos, sin = rope
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    k = repeat_kv(k, attn.num_key_value_groups)
    rows = q.gather(2, queries[:, None, :, None].expand(-1, q.shape[1], -1, q.shape[-1]))
    logits = rows @ k.transpose(-1, -2) * attn.scaling
    if mask is not None:
        logits = logits + mask
    return logits.float().softmax(-1).mean(dim=(1, 2))


def top_k_selection(scores: torch.Tensor, valid: torch.Tensor, k: int) -> Selection:
    """Keep the ``k`` highest-scoring valid tokens per sample."""
    scores = scores.masked_fill(~valid, -torch.inf)
    k = min(k, scores.shape[1])
    picks = scores.topk(k, dim=-1).indices
    keep = torch.zeros_like(valid)
    keep.scatter_(1, picks, True)
    return Selection(None, picks, keep & valid, None)


@torch.no_grad()
def forward_top_k(
    model: LightVLAForActionPrediction,
    pixel_values: torch.Tensor,
    text_ids: torch.Tensor,
    text_lengths: torch.Tensor,
    proprio: torch.Tensor | None,
    *,
    k: int,
    layer: int,
    scorer: str,
    generator: torch.Generator | None = None,
) -> TopKOutput:
    """Predict with ``k`` visual tokens from layer ``layer`` on (``scorer``: "attention" or "random")."""
    if scorer not in ("attention", "random"):
        raise ValueError(f"unknown scorer {scorer!r}")
    if scorer == "attention" and layer < 1:
        raise ValueError("attention top-k ranks tokens with an earlier layer's attention: layer must be >= 1")
    bos, task, task_mask = model._embed_text(text_ids, text_lengths, proprio)
    visual = model.vision_backbone(pixel_values.to(model.dtype), model.config.num_images)
    visual = VisualTokens(model.projector(visual.features), visual.patch_index, visual.valid)
    seq = model._compose(bos, visual, task, task_mask)
    hidden = seq.hidden
    mask = model._attention_mask(seq.valid, hidden.dtype)
    rope = model.llm.rotary_emb(hidden, seq.positions)
    previous = hidden
    for index, block in enumerate(model.llm.layers):
        if index == layer:
            n = seq.num_visual
            current = VisualTokens(hidden[:, 1 : 1 + n], seq.visual.patch_index, seq.visual.valid)
            if scorer == "attention":
                received = attention_received(model.llm.layers[index - 1], previous, rope, mask, slot_positions(model, n, seq.task_mask))
                scores = received[:, 1 : 1 + n]
            else:
                scores = torch.rand(current.valid.shape, generator=generator, device=hidden.device)
            kept = top_k_selection(scores, current.valid, k).apply(current)
            seq = model._compose(hidden[:, :1], kept, hidden[:, 1 + n :], seq.task_mask)
            hidden = seq.hidden
            mask = model._attention_mask(seq.valid, hidden.dtype)
            rope = model.llm.rotary_emb(hidden, seq.positions)
        previous = hidden
        hidden = block(hidden, attention_mask=mask, position_ids=seq.positions, position_embeddings=rope, is_causal=False)
    states = model.llm.norm(model._read_slots(hidden, seq))
    kept_indices = [seq.visual.patch_index[b][seq.visual.valid[b]] for b in range(hidden.shape[0])]
    return TopKOutput(model.action_head(states), kept_indices)

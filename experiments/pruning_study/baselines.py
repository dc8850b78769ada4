"""Training-free pruners for comparison with learned pruning: FastV-style attention top-k, and random top-k.

Both run an unpruned model (trained with all tokens) and keep a fixed number ``k`` of visual tokens per sample,
through the model's token-filter hook (:class:`lightvla_ros.model.modeling.TokenFilter`):

- :class:`AttentionTopK`: the LLM runs layers ``0 .. layer-1`` on all tokens; the visual tokens are ranked by the
  attention they receive in layer ``layer-1`` (softmax probabilities, averaged over heads) from the positions the
  action head reads (the action slots: in this parallel-decoding model they play the part of FastV's last token),
  and only the top ``k`` continue into layers ``layer ..``. FastV's rule, adapted to bidirectional parallel decoding.
- :class:`RandomTopK`: ``k`` visual tokens drawn uniformly, at the input of layer ``layer`` (0: before the LLM,
  where LightVLA prunes).

Kept tokens keep their original order and RoPE positions, as in LightVLA.
"""

from __future__ import annotations

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from lightvla_ros.model.modeling import LayerInput, LightVLAForActionPrediction


def attention_received(layer: torch.nn.Module, inputs: LayerInput, queries: torch.Tensor) -> torch.Tensor:
    """(B, L) attention probability each position receives in the decoder ``layer`` run on ``inputs``, from the
    ``queries`` rows (B, Q), averaged over heads and queries."""
    attn = layer.self_attn
    x = layer.input_layernorm(inputs.hidden)
    batch, length, _ = x.shape
    q = attn.q_proj(x).view(batch, length, -1, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(x).view(batch, length, -1, attn.head_dim).transpose(1, 2)
    cos, sin = inputs.position_embeddings
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    k = repeat_kv(k, attn.num_key_value_groups)
    rows = q.gather(2, queries[:, None, :, None].expand(-1, q.shape[1], -1, q.shape[-1]))
    logits = rows @ k.transpose(-1, -2) * attn.scaling
    if inputs.attention_mask is not None:
        logits = logits + inputs.attention_mask
    return logits.float().softmax(-1).mean(dim=(1, 2))


def top_k_mask(scores: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N) bool: the ``k`` highest-scoring valid tokens per sample."""
    scores = scores.masked_fill(~valid, -torch.inf)
    picks = scores.topk(min(k, scores.shape[1]), dim=-1).indices
    keep = torch.zeros_like(valid)
    keep.scatter_(1, picks, True)
    return keep & valid


class AttentionTopK:
    """FastV-style: keep the ``k`` visual tokens the action slots attend to most in layer ``layer - 1``."""

    def __init__(self, model: LightVLAForActionPrediction, k: int, layer: int) -> None:
        if layer < 1:
            raise ValueError("attention top-k ranks tokens with an earlier layer's attention: layer must be >= 1")
        self.model, self.k, self.layer = model, k, layer

    def __call__(self, inputs: LayerInput) -> torch.Tensor:
        previous = inputs.previous
        received = attention_received(self.model.llm.layers[previous.index], previous, previous.slot_positions)
        return top_k_mask(received[:, 1 : 1 + inputs.num_visual], inputs.visual_valid, self.k)


class RandomTopK:
    """Keep ``k`` visual tokens drawn uniformly at the input of layer ``layer``."""

    def __init__(self, k: int, layer: int = 0, generator: torch.Generator | None = None) -> None:
        self.k, self.layer, self.generator = k, layer, generator

    def __call__(self, inputs: LayerInput) -> torch.Tensor:
        scores = torch.rand(inputs.visual_valid.shape, generator=self.generator, device=inputs.hidden.device)
        return top_k_mask(scores, inputs.visual_valid, self.k)

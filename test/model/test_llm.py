"""The LLM path: fully bidirectional attention, original RoPE positions, float32 RoPE, no LM head."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lightvla_ros.model.checkpoint import load_model
from lightvla_ros.model.configuration import PruningConfig
from lightvla_ros.model.presets import random_model, tiny_config
from lightvla_ros.model.pruning import VisualTokens


def _rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    dim = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    angles = positions[:, None].float() * inv[None, :]
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    half = torch.cat([-x[..., dim // 2:], x[..., : dim // 2]], -1)
    return x * cos + half * sin


def reference_decoder(model, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Llama decoder written out by hand: every query attends to every key (no mask of any kind)."""
    cfg = model.llm.config
    heads, head_dim = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    theta = cfg.rope_parameters["rope_theta"]

    def rms(x, weight, eps):
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    x = hidden[0]
    for layer in model.llm.layers:
        a = layer.self_attn
        h = rms(x, layer.input_layernorm.weight, cfg.rms_norm_eps)
        q, k, v = (proj(h).view(-1, heads, head_dim).transpose(0, 1) for proj in (a.q_proj, a.k_proj, a.v_proj))
        q, k = _rope(q, positions, theta), _rope(k, positions, theta)
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim), -1) @ v
        x = x + a.o_proj(attn.transpose(0, 1).reshape(x.shape[0], -1))
        m = layer.mlp
        h = rms(x, layer.post_attention_layernorm.weight, cfg.rms_norm_eps)
        x = x + m.down_proj(F.silu(m.gate_proj(h)) * m.up_proj(h))
    return x[None]


def _sequence(model, visual_index: list[int], task_len: int = 10):
    torch.manual_seed(0)
    d = model.config.llm_dim
    visual = VisualTokens(torch.randn(1, len(visual_index), d), torch.tensor([visual_index]), torch.ones(1, len(visual_index), dtype=torch.bool))
    return model._compose(torch.randn(1, 1, d), visual, torch.randn(1, task_len, d), torch.ones(1, task_len, dtype=torch.bool))


def test_layers_are_bidirectional_even_with_gapped_position_ids():
    """transformers reads gapped positions as packed sequences (block-diagonal causal mask); we must not."""
    model = random_model(tiny_config(448, 5, hidden=32, layers=2), PruningConfig())
    seq = _sequence(model, [3, 40, 41, 300, 511])  # kept patches keep their original, gapped positions
    assert seq.positions[0, :6].tolist() == [0, 4, 41, 42, 301, 512]
    assert seq.positions[0, 6] == 513, "task tokens start after all 512 patch positions"
    with torch.no_grad():
        ours, _, _ = model._run_llm(seq, None, False, 0.0, None)
        expected = reference_decoder(model, seq.hidden, seq.positions[0])
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)


def test_first_position_sees_the_last_token():
    model = random_model(tiny_config(448, 5, hidden=32, layers=2), PruningConfig())
    seq = _sequence(model, list(range(8)))
    with torch.no_grad():
        before, _, _ = model._run_llm(seq, None, False, 0.0, None)
        seq.hidden[0, -1] += 1.0  # change only the stop token
        after, _, _ = model._run_llm(seq, None, False, 0.0, None)
    assert (before[0, 0] - after[0, 0]).abs().max() > 1e-4


def test_renumbering_kept_tokens_would_change_the_output():
    model = random_model(tiny_config(448, 5, hidden=32, layers=2), PruningConfig())
    original = _sequence(model, [10, 200, 400])
    renumbered = _sequence(model, [0, 1, 2])
    with torch.no_grad():
        a, _, _ = model._run_llm(original, None, False, 0.0, None)
        b, _, _ = model._run_llm(renumbered, None, False, 0.0, None)
    assert (a - b).abs().max() > 1e-4


def test_rope_frequencies_stay_float32_in_bfloat16_models(reference_fixture):
    model, _ = load_model(reference_fixture, dtype=torch.bfloat16)
    inv = model.llm.rotary_emb.inv_freq
    head_dim = model.config.llm_dim // model.config.text["num_attention_heads"]
    exact = 1.0 / 10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    assert inv.dtype == torch.float32 and torch.equal(inv, exact)
    assert model.llm.embed_tokens.weight.dtype == torch.bfloat16
    assert model.proprio_projector.fc1.weight.dtype == torch.float32, "the state is projected in float32"


def test_no_lm_head_is_built_and_the_causal_flag_is_off(reference_fixture):
    model, _ = load_model(reference_fixture)
    assert not any("lm_head" in name for name, _ in model.named_parameters())
    assert all(layer.self_attn.is_causal is False for layer in model.llm.layers)
    assert model.llm.config._attn_implementation == "sdpa"
    assert model.llm.config.rms_norm_eps == 1e-5, "the config's epsilon, not a library default"

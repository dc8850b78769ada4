"""Model shapes the benchmark runs, and how they are built with random weights.

``tiny``: the size of the test fixture (ViTs 48 wide, a 2-layer 64-wide Llama): checks the benchmark itself.
``7b-shaped``: the released 7B architecture shrunk so a 2-core CPU runs it in seconds, with the same FLOPs
    proportions between stages and between kept-token counts (see :func:`seven_b_shaped_config`).
``7b``: the released architecture (DINOv2-L + SigLIP-So400m, Llama-2-7B), for GPUs.

All three are built on the meta device and materialised directly on the target device and dtype, so the 7B
model never exists in float32 on the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from lightvla_ros.model.checkpoint import cast_model
from lightvla_ros.model.configuration import PruningConfig, VLAConfig
from lightvla_ros.model.flops import OPENVLA_OFT_7B_CONFIG, openvla_oft_7b_config
from lightvla_ros.model.modeling import LightVLAForActionPrediction
from lightvla_ros.model.tiny import tiny_config

SEVEN_B_SHRINK = 8
_MLP_RATIO_STEP = 8  # MLP ratios are rounded to multiples of 1/8: exact in binary, so timm's int(w * ratio) is exact


@dataclass(frozen=True)
class _Block:
    """Width, blocks run (the last block is never run), MLP hidden size and head count of a transformer."""

    width: int
    blocks_run: int
    mlp: int
    heads: int


def _reference_vits() -> list[_Block]:
    from lightvla_ros.model.vision import FusedVisionBackbone

    with torch.device("meta"):
        backbone = FusedVisionBackbone(openvla_oft_7b_config().vision)
    return [_Block(v.embed_dim, len(v.blocks) - 1, v.blocks[0].mlp.fc1.out_features, v.blocks[0].attn.num_heads)
            for v in backbone.featurizers]


def seven_b_shaped_config(shrink: int = SEVEN_B_SHRINK) -> VLAConfig:
    """The 7B architecture with every stage's FLOPs divided by ``shrink**2``, at every kept-token count.

    Token counts cannot change (512 patches, the prompt, 56 action slots are what pruning acts on), so only
    widths and depths can. Per stage, with s = 1/shrink:

    - linear layers cost depth * tokens * c * width**2 (c: MACs per token per block over width**2),
    - attention costs depth * tokens**2 * width,
    - the projector (no depth) and the action head cost tokens * width**2.

    Every width times s and every depth times s make attention and the projector/head cost s**2 times the 7B's;
    multiplying each MLP's c by 1/s (so c * depth stays the 7B's) brings the linear layers to s**2 as well. All
    stages then shrink by the same factor s**2, so their shares of the total and every pruned/unpruned ratio
    are the 7B's. What does not follow exactly: the pruner (N**2 * width, so its share grows by 1/s, to at most
    1.1%), the patch embedding (0.1%), and rounding of depths and MLP sizes (checked in the tests).
    """
    reference = openvla_oft_7b_config()
    text = reference.text
    s = 1.0 / shrink

    vit_kwargs = []
    for vit in _reference_vits():
        runs = max(1, round(vit.blocks_run * s))
        width = vit.width // shrink
        c = (4 + 2 * vit.mlp / vit.width) * vit.blocks_run / runs
        ratio = round((c - 4) / 2 * _MLP_RATIO_STEP) / _MLP_RATIO_STEP
        heads = max(1, width // (vit.width // vit.heads))
        vit_kwargs.append({"embed_dim": width, "depth": runs + 1, "num_heads": heads, "mlp_ratio": ratio})

    hidden, layers = int(text["hidden_size"]), int(text["num_hidden_layers"])
    head_dim = hidden // int(text["num_attention_heads"])
    c = 4 + 3 * int(text["intermediate_size"]) / hidden
    layers_s = max(1, round(layers * s))
    hidden_s = hidden // shrink
    c_s = c * layers / layers_s
    intermediate = int(round((c_s - 4) * hidden_s / 3 / 64)) * 64
    heads_s = max(1, hidden_s // head_dim)

    raw = {**OPENVLA_OFT_7B_CONFIG, "timm_model_kwargs": vit_kwargs}
    raw["text_config"] = {
        **OPENVLA_OFT_7B_CONFIG["text_config"],
        "hidden_size": hidden_s,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers_s,
        "num_attention_heads": heads_s,
        "num_key_value_heads": heads_s,
    }
    return VLAConfig.from_dict(raw)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    make_config: Callable[[int, int], VLAConfig]  # (tokenizer vocabulary size, id of the action-prefix token)
    # rows of the LM head the authors' path evaluates: the 7B's vocabulary, scaled like every other width in
    # 7b-shaped so that its share of the cost stays the 7B's
    lm_head_rows: Callable[[VLAConfig], int]
    reps: int
    warmup: int
    cpu_ok: bool = True


def _with_prefix(config: VLAConfig, prefix: int) -> VLAConfig:
    config.action_prefix_token_id = prefix
    return config


def _vocab(config: VLAConfig) -> int:
    return int(config.text["vocab_size"])


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", "test-fixture sized (ViTs 48 wide, Llama 64 wide x 2 layers)",
                   tiny_config, _vocab, reps=5, warmup=1),
    "7b-shaped": Preset("7b-shaped", f"OpenVLA-OFT 7B with widths and depths / {SEVEN_B_SHRINK}, MLPs widened: every stage's "
                        f"FLOPs = 7B / {SEVEN_B_SHRINK ** 2}", lambda vocab, prefix: _with_prefix(seven_b_shaped_config(), prefix),
                        lambda c: _vocab(c) // SEVEN_B_SHRINK, reps=12, warmup=2),
    "7b": Preset("7b", "OpenVLA-OFT 7B (DINOv2-L + SigLIP-So400m, Llama-2-7B), random weights",
                 lambda vocab, prefix: _with_prefix(openvla_oft_7b_config(), prefix),
                 _vocab, reps=30, warmup=5, cpu_ok=False),
}


def materialize(config: VLAConfig, device: torch.device, dtype: torch.dtype, seed: int = 0) -> LightVLAForActionPrediction:
    """A randomly initialised model built on the meta device, then allocated once on ``device`` in ``dtype``."""
    with torch.device("meta"):
        model = LightVLAForActionPrediction(config, PruningConfig())
    cast_model(model, dtype, "meta")
    model.to_empty(device=device)
    init_random_(model, seed)
    model.restore_rope_precision()
    return model.eval()


@torch.no_grad()
def init_random_(model: nn.Module, seed: int) -> None:
    """Deterministic random weights of sensible scale: each layer's own initialiser, unit norms, N(0, 0.02) else."""
    torch.manual_seed(seed)
    done: set[int] = set()
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
            done.update(id(p) for p in module.parameters(recurse=False))
    for name, param in model.named_parameters():
        if id(param) in done:
            continue
        if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
            param.fill_(1.0)
        else:
            param.normal_(0.0, 0.02)

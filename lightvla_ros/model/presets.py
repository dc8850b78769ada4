"""Model shapes with random weights: the one registry of presets, and the one builder of random models.

``7b``: the released architecture (DINOv2-L + SigLIP-So400m, Llama-2-7B), for GPUs.
``7b-shaped``: the 7B architecture shrunk so a 2-core CPU runs it in seconds, with the same FLOPs proportions
    between stages and between kept-token counts (see :func:`seven_b_shaped_config`).
``tiny``: a few hundred thousand parameters with the release's token counts (two 224 px cameras, 512 patches, 8-d
    proprio, 8x7 chunks): ``lightvla make-tiny``, the demo and the tests.

Every preset is built by :func:`random_model`, directly on the target device and in the target dtype, so the 7B
model never exists in float32 on the host. (The pruning study's 16-token toy model lives with the study, in
``experiments/pruning_study/toy.py``, and is built by the same function.)
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from lightvla_ros.model.checkpoint import cast_model
from lightvla_ros.model.configuration import PruningConfig, VLAConfig
from lightvla_ros.model.modeling import LightVLAForActionPrediction

# The released LIBERO checkpoints' config.json, reduced to what differs from the reference's Llama defaults.
OPENVLA_OFT_7B_CONFIG = {
    "model_type": "openvla",
    "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
    "image_sizes": [224, 224],
    "timm_override_act_layers": [None, None],
    "use_fused_vision_backbone": True,
    "pad_token_id": 32000,
    "text_config": {"model_type": "llama", "vocab_size": 32064, "rms_norm_eps": 1e-5, "pad_token_id": 32000},
    "lightvla": {"num_images": 2, "proprio_dim": 8, "action_dim": 7, "chunk_len": 8},
}
SEVEN_B_SHRINK = 8
_MLP_RATIO_STEP = 8  # MLP ratios are rounded to multiples of 1/8: exact in binary, so timm's int(w * ratio) is exact


def openvla_oft_7b_config() -> VLAConfig:
    """The released LIBERO checkpoints' architecture (DINOv2-L + SigLIP-So400m, Llama-2-7B, 2 cameras, proprio)."""
    return VLAConfig.from_dict(copy.deepcopy(OPENVLA_OFT_7B_CONFIG))


def tiny_config(vocab_size: int, prefix_token_id: int, hidden: int = 64, layers: int = 2, num_images: int = 2,
                proprio_dim: int | None = 8) -> VLAConfig:
    """The release's token layout with ViTs 48 wide and 3 blocks deep and a ``layers`` x ``hidden`` Llama."""
    padded_vocab = -(-vocab_size // 64) * 64
    return VLAConfig.from_dict({
        "model_type": "openvla",
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        "timm_model_kwargs": [{"embed_dim": 48, "depth": 3, "num_heads": 3}, {"embed_dim": 48, "depth": 3, "num_heads": 3}],
        "image_sizes": [224, 224],
        "timm_override_act_layers": [None, None],
        "use_fused_vision_backbone": True,
        "image_resize_strategy": "resize-naive",
        "pad_token_id": 3,
        "text_config": {"model_type": "llama", "vocab_size": padded_vocab, "hidden_size": hidden, "intermediate_size": 4 * hidden,
                        "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 4,
                        "rms_norm_eps": 1e-5, "pad_token_id": 3, "bos_token_id": 1, "eos_token_id": 2},
        "lightvla": {"num_images": num_images, "proprio_dim": proprio_dim, "action_dim": 7, "chunk_len": 8, "stop_token_id": 2,
                     "action_prefix_token_id": prefix_token_id},
    })


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
    cpu_ok: bool = True  # False: too large for a CPU (minutes per forward)


def _with_prefix(config: VLAConfig, prefix: int) -> VLAConfig:
    config.action_prefix_token_id = prefix
    return config


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", "test-fixture sized (ViTs 48 wide, Llama 64 wide x 2 layers)", tiny_config),
    "7b-shaped": Preset("7b-shaped", f"OpenVLA-OFT 7B with widths and depths / {SEVEN_B_SHRINK}, MLPs widened: every stage's "
                        f"FLOPs = 7B / {SEVEN_B_SHRINK ** 2}", lambda vocab, prefix: _with_prefix(seven_b_shaped_config(), prefix)),
    "7b": Preset("7b", "OpenVLA-OFT 7B (DINOv2-L + SigLIP-So400m, Llama-2-7B), random weights",
                 lambda vocab, prefix: _with_prefix(openvla_oft_7b_config(), prefix), cpu_ok=False),
}


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def random_model(config: VLAConfig, pruning: PruningConfig | None = None, *, seed: int | None = 0,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LightVLAForActionPrediction:
    """A model with each layer's own random initialisation, created on ``device`` in ``dtype`` (the proprio
    projector and RoPE frequencies in float32, as loaded checkpoints have them). ``seed`` None: torch's current
    random state (for callers that seed once for several draws)."""
    if seed is not None:
        torch.manual_seed(seed)
    with torch.device(device), _default_dtype(dtype):
        model = LightVLAForActionPrediction(config, pruning or PruningConfig())
    cast_model(model, dtype, device)
    return model

"""Configuration of the VLA (read from a release ``config.json``) and of the token pruner.

A release checkpoint's ``config.json`` is an ``OpenVLAConfig``. Fields it leaves out fall back to the defaults
the reference implementation used (transformers 4.40.1's ``LlamaConfig``, i.e. Llama-2-7B), never to whatever
the installed transformers version happens to default to. Everything this project adds lives under the
``"lightvla"`` key so that the file stays loadable by the reference code.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightvla_ros.model.errors import CheckpointError, InputError

# transformers 4.40.1 LlamaConfig defaults (Llama-2-7B); the reference filled missing text_config fields with these.
LLAMA_REFERENCE_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": None,  # = num_attention_heads
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "attention_bias": False,
    "pad_token_id": 32000,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

# Platform constants by action dimension (the reference sniffed the command line; we never do).
CHUNK_LEN_BY_ACTION_DIM = {7: 8, 14: 25}

# The choices of the user-facing options (command line, node parameters, trainer), each defined here only.
PRUNING_METHODS = ("lightvla", "lightvla_star", "none")
READOUT_MODES = ("last", "aligned")
NOISE_KINDS = ("uniform", "gumbel")
DTYPE_CHOICES = ("auto", "bfloat16", "float16", "float32")  # auto: bfloat16 on CUDA, float32 on the CPU
# How camera frames reach the processor. oft: the authors' LIBERO evaluation chain (JPEG round trip, TF Lanczos
# resize, TF centre crop when cropping), what the released checkpoints expect; plain: frames as they are (Pillow crop),
# what `lightvla train` trains on; auto: oft when centre-cropping (the LIBERO recipe), plain otherwise.
PREPROCESSING_CHOICES = ("auto", "oft", "plain")
# The LIBERO recipe's centre crop keeps this fraction of the image area (docs/model-notes.md §1).
CENTER_CROP_AREA = 0.9
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")  # torch.compile; see model/acceleration.py
COMPILE_BACKENDS = ("inductor", "eager", "aot_eager")  # eager / aot_eager trace without generating code (tests)
ALLOCATORS = ("default", "heap")  # heap: keep freed activations in glibc's heap (see model/allocator.py)
# Weight-only quantization of the LLM and projector (model/quantization.py); int4 = int4-g128 (group size of scales).
QUANTIZE_MODES = ("none", "int8", "int4", "int4-g32", "int4-g64", "int4-g128", "int4-g256", "fp8")
SDPA_BACKENDS = ("auto", "math", "flash", "efficient", "cudnn")  # torch.nn.attention.sdpa_kernel; auto: torch picks


@dataclass
class VisionConfig:
    """The (fused) timm vision backbone: one entry per featurizer, DINOv2 first then SigLIP."""

    timm_model_ids: list[str]
    image_sizes: list[int]
    override_act_layers: list[str | None]
    model_kwargs: list[dict[str, Any]]

    @property
    def num_featurizers(self) -> int:
        return len(self.timm_model_ids)

    @property
    def image_size(self) -> int:
        return self.image_sizes[0]


@dataclass
class PruningConfig:
    """Which visual tokens reach the LLM.

    ``lightvla``: the parameter-free pruner before LLM layer 0 (the paper's method).
    ``lightvla_star``: learnable queries, inside the vision encoder (``star_position="vision"``, after block
    ``star_vision_block``) or at the input of LLM layer ``star_llm_layer`` (0..3).
    ``none``: every visual token is kept (plain OpenVLA-OFT).
    ``max_kept_tokens`` caps the kept set for hard latency limits (tokens picked by more queries win, ties by score).
    """

    method: str = "lightvla"
    max_kept_tokens: int | None = None
    noise: str = "uniform"
    star_num_queries: int = 64
    star_position: str = "llm"
    star_llm_layer: int = 0
    star_vision_block: int = 0

    def __post_init__(self) -> None:
        if self.method not in PRUNING_METHODS:
            raise InputError(f"unknown pruning method {self.method!r}; choose one of {', '.join(PRUNING_METHODS)}")
        if self.max_kept_tokens is not None and self.max_kept_tokens < 1:
            raise InputError(f"max_kept_tokens must be >= 1 or None, got {self.max_kept_tokens}")
        if self.noise not in NOISE_KINDS:
            raise InputError(f"unknown selection noise {self.noise!r}; choose one of {', '.join(NOISE_KINDS)}")
        if self.star_position not in ("llm", "vision"):
            raise InputError(f"star_position must be 'llm' or 'vision', got {self.star_position!r}")
        if not 0 <= self.star_llm_layer <= 3:
            raise InputError(f"star_llm_layer must be in 0..3 (shallow LLM layers), got {self.star_llm_layer}")
        if self.star_num_queries < 1:
            raise InputError(f"star_num_queries must be >= 1, got {self.star_num_queries}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class VLAConfig:
    """Everything needed to build the network. Head/projector sizes are read from the checkpoint's weights."""

    vision: VisionConfig
    text: dict[str, Any]
    norm_stats: dict[str, Any] = field(default_factory=dict)
    pad_token_id: int = 32000
    num_images: int = 2
    proprio_dim: int | None = 8
    action_dim: int = 7
    chunk_len: int = 8
    head_hidden_dim: int | None = None  # defaults to the LLM width
    stop_token_id: int = 2
    action_prefix_token_id: int | None = 29871
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def llm_dim(self) -> int:
        return int(self.text["hidden_size"])

    @property
    def num_action_slots(self) -> int:
        return self.chunk_len * self.action_dim

    @property
    def patches_per_image(self) -> int:
        kwargs = self.vision.model_kwargs[0]
        patch = int(kwargs.get("patch_size", 14))
        return (self.vision.image_size // patch) ** 2

    @property
    def num_patches(self) -> int:
        return self.patches_per_image * self.num_images

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "VLAConfig":
        """Parse an ``OpenVLAConfig`` dict; missing Llama fields take the reference's defaults."""
        try:
            ids = raw["timm_model_ids"]
        except KeyError as exc:
            raise CheckpointError("config.json has no 'timm_model_ids': is this an OpenVLA/LightVLA checkpoint?") from exc
        ids = [ids] if isinstance(ids, str) else list(ids)
        if not raw.get("use_fused_vision_backbone", len(ids) > 1):
            ids = ids[:1]
        n = len(ids)
        sizes = raw.get("image_sizes", [224] * n)
        sizes = [int(sizes)] * n if isinstance(sizes, int) else [int(s) for s in sizes][:n]
        acts = raw.get("timm_override_act_layers") or [None] * n
        kwargs = raw.get("timm_model_kwargs") or [{} for _ in range(n)]
        if len(set(sizes)) != 1:
            raise CheckpointError(f"featurizers must share one image size, config.json says {sizes}")
        vision = VisionConfig(list(ids), sizes, list(acts)[:n], [dict(k or {}) for k in kwargs][:n])

        text = dict(LLAMA_REFERENCE_DEFAULTS)
        text.update({k: v for k, v in (raw.get("text_config") or {}).items() if k in LLAMA_REFERENCE_DEFAULTS})
        if text["num_key_value_heads"] is None:
            text["num_key_value_heads"] = text["num_attention_heads"]
        ours = raw.get("lightvla") or {}
        cfg = cls(
            vision=vision,
            text=text,
            norm_stats=raw.get("norm_stats") or {},
            pad_token_id=int(raw.get("pad_token_id", text["pad_token_id"])),
            num_images=int(ours.get("num_images", 2)),
            proprio_dim=ours.get("proprio_dim", 8),
            action_dim=int(ours.get("action_dim", 7)),
            chunk_len=int(ours.get("chunk_len", 8)),
            head_hidden_dim=ours.get("head_hidden_dim"),
            stop_token_id=int(ours.get("stop_token_id", text["eos_token_id"])),
            action_prefix_token_id=ours.get("action_prefix_token_id", 29871),
            raw=raw,
        )
        return cfg

    @classmethod
    def from_file(cls, path: str | Path) -> "VLAConfig":
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise CheckpointError(f"{path} not found: a checkpoint folder needs config.json") from exc
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path} is not valid JSON ({exc})") from exc
        return cls.from_dict(raw)

    def to_dict(self, pruning: PruningConfig | None = None) -> dict[str, Any]:
        """The release-format dict, with our own additions under ``"lightvla"``."""
        raw = dict(self.raw)
        raw.setdefault("model_type", "openvla")
        raw["timm_model_ids"] = list(self.vision.timm_model_ids)
        raw["image_sizes"] = list(self.vision.image_sizes)
        raw["timm_override_act_layers"] = list(self.vision.override_act_layers)
        if any(self.vision.model_kwargs):
            raw["timm_model_kwargs"] = [dict(k) for k in self.vision.model_kwargs]
        raw["use_fused_vision_backbone"] = self.vision.num_featurizers > 1
        raw["text_config"] = {**(raw.get("text_config") or {}), **{k: v for k, v in self.text.items() if v is not None}}
        raw["norm_stats"] = self.norm_stats
        raw["pad_token_id"] = self.pad_token_id
        ours = {
            "num_images": self.num_images,
            "proprio_dim": self.proprio_dim,
            "action_dim": self.action_dim,
            "chunk_len": self.chunk_len,
            "stop_token_id": self.stop_token_id,
            "action_prefix_token_id": self.action_prefix_token_id,
        }
        if self.head_hidden_dim is not None:
            ours["head_hidden_dim"] = self.head_hidden_dim
        if pruning is not None:
            ours["pruning"] = pruning.to_dict()
        raw["lightvla"] = ours
        return raw

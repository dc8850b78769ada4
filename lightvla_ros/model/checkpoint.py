"""Reading and writing checkpoints in the released OpenVLA-OFT / LightVLA folder layout (docs/model-notes.md §11).

``config.json``, ``model.safetensors`` (or shards plus ``model.safetensors.index.json``),
``action_head--{step}_checkpoint.pt`` and optionally ``proprio_projector--{step}_checkpoint.pt`` (DDP ``module.``
prefix), ``dataset_statistics.json``, ``tokenizer.json`` and ``preprocessor_config.json``. LightVLA* queries,
which no release has, are stored the same way as ``lightvla_star--{step}_checkpoint.pt``.
``.pt`` files are read with ``weights_only=True``: a downloaded pickle is code.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lightvla_ros.model.configuration import CHUNK_LEN_BY_ACTION_DIM, PruningConfig, VLAConfig
from lightvla_ros.model.errors import CheckpointError
from lightvla_ros.model.modeling import LightVLAForActionPrediction

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "tokenizer.model", "generation_config.json", "preprocessor_config.json")
LM_HEAD_KEY = "language_model.lm_head.weight"

# release key prefix -> our module prefix
_PREFIXES = (
    ("vision_backbone.", "vision_backbone."),
    ("projector.", "projector."),
    ("language_model.model.", "llm."),
)


@dataclass
class CheckpointFiles:
    root: Path
    config: Path
    weights: list[Path]
    action_head: Path
    proprio_projector: Path | None
    star_pruner: Path | None
    statistics: Path | None
    tokenizer: Path
    preprocessor: Path

    @classmethod
    def discover(cls, root: str | Path) -> "CheckpointFiles":
        root = Path(root).expanduser()
        if not root.is_dir():
            raise CheckpointError(f"checkpoint folder {root} does not exist (download the checkpoint and pass its local folder)")
        config = root / "config.json"
        if not config.is_file():
            raise CheckpointError(f"{root} has no config.json: not a checkpoint folder in the OpenVLA/LightVLA release layout")
        index = root / "model.safetensors.index.json"
        if index.is_file():
            try:
                shard_names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError) as exc:
                raise CheckpointError(f"{index} is corrupt ({exc})") from exc
            weights = [root / name for name in shard_names]
            missing = [w.name for w in weights if not w.is_file()]
            if missing:
                raise CheckpointError(f"{root} is missing weight shards {missing} listed in model.safetensors.index.json")
        elif (root / "model.safetensors").is_file():
            weights = [root / "model.safetensors"]
        else:
            raise CheckpointError(f"{root} has no model.safetensors (nor a model.safetensors.index.json with shards)")
        tokenizer = root / "tokenizer.json"
        if not tokenizer.is_file():
            raise CheckpointError(f"{root} has no tokenizer.json")
        statistics = root / "dataset_statistics.json"
        return cls(
            root=root,
            config=config,
            weights=weights,
            action_head=_single(root, "action_head", required=True),
            proprio_projector=_single(root, "proprio_projector", required=False),
            star_pruner=_single(root, "lightvla_star", required=False),
            statistics=statistics if statistics.is_file() else None,
            tokenizer=tokenizer,
            preprocessor=root / "preprocessor_config.json",
        )


def _single(root: Path, stem: str, required: bool) -> Path | None:
    found = sorted(root.glob(f"{stem}--*_checkpoint.pt"))
    if len(found) > 1:
        raise CheckpointError(f"{root} has several {stem} checkpoints ({', '.join(p.name for p in found)}); keep exactly one")
    if not found and required:
        raise CheckpointError(f"{root} has no {stem}--<step>_checkpoint.pt (the L1 action head is required)")
    return found[0] if found else None


def load_pt(path: Path) -> dict[str, torch.Tensor]:
    """A DDP state dict saved with ``torch.save``, without its ``module.`` prefix. Never unpickles code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError ... for bad files
        raise CheckpointError(f"cannot read {path.name}: {exc}. Is the file complete and a plain state dict?") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path.name} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def read_safetensors(paths: list[Path]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for path in paths:
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    tensors[key] = f.get_tensor(key)
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"cannot read {path.name}: {exc}. Re-download the file.") from exc
    return tensors


def release_to_model_keys(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename release keys to our module names (timm 1.0 calls LayerScale weights ``gamma``)."""
    out = {}
    for key, value in tensors.items():
        if key == LM_HEAD_KEY:
            continue  # the L1 head never uses logits; the LM head is not even built
        for src, dst in _PREFIXES:
            if key.startswith(src):
                out[dst + key[len(src):].replace(".scale_factor", ".gamma")] = value
                break
        else:
            raise CheckpointError(f"unexpected weight {key!r} in the checkpoint")
    return out


def model_to_release_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for release_prefix, our_prefix in _PREFIXES:
            if key.startswith(our_prefix):
                out[release_prefix + key[len(our_prefix):].replace(".gamma", ".scale_factor")] = value
                break
    return out


def read_statistics(files: CheckpointFiles, config: VLAConfig) -> dict[str, Any]:
    """The dataset statistics by unnorm key: ``dataset_statistics.json``, else ``norm_stats`` in config.json."""
    if files.statistics is None:
        return config.norm_stats
    try:
        return json.loads(files.statistics.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{files.statistics} is not valid JSON ({exc})") from exc


def read_config(files: CheckpointFiles, num_images: int | None) -> tuple[VLAConfig, PruningConfig | None]:
    """The config, with head/projector sizes read from the weight files themselves."""
    config = VLAConfig.from_file(files.config)
    head = load_pt(files.action_head)
    try:
        fc2 = head["model.fc2.weight"]
        config.action_dim = int(fc2.shape[0])
        config.head_hidden_dim = int(fc2.shape[1])
        slots_dim = int(head["model.layer_norm1.weight"].shape[0])
    except KeyError as exc:
        raise CheckpointError(f"{files.action_head.name} is not an L1 regression action head (missing {exc})") from exc
    if slots_dim != config.action_dim * config.llm_dim:
        raise CheckpointError(f"{files.action_head.name} expects LLM width {slots_dim // config.action_dim}, config.json says {config.llm_dim}")
    ours = config.raw.get("lightvla") or {}
    config.chunk_len = int(ours.get("chunk_len", CHUNK_LEN_BY_ACTION_DIM.get(config.action_dim, 8)))
    if files.proprio_projector is not None:
        config.proprio_dim = int(load_pt(files.proprio_projector)["fc1.weight"].shape[1])
    else:
        config.proprio_dim = None
    if num_images is not None:
        config.num_images = num_images
    pruning = ours.get("pruning")
    star = PruningConfig(**pruning) if pruning and pruning.get("method") == "lightvla_star" and files.star_pruner else None
    return config, star


def load_model(
    root: str | Path,
    pruning: PruningConfig | None = None,
    num_images: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> tuple[LightVLAForActionPrediction, CheckpointFiles]:
    """Build the network on the meta device and fill it from the checkpoint files (no random init of 7B weights)."""
    files = CheckpointFiles.discover(root)
    config, star = read_config(files, num_images)
    build_pruning = star or pruning or PruningConfig()
    with torch.device("meta"):
        model = LightVLAForActionPrediction(config, build_pruning)
    state = release_to_model_keys(read_safetensors(files.weights))
    state.update({f"action_head.{k}": v for k, v in load_pt(files.action_head).items()})
    if files.proprio_projector is not None:
        state.update({f"proprio_projector.{k}": v for k, v in load_pt(files.proprio_projector).items()})
    if star is not None:
        state.update({f"star_pruner.{k}": v for k, v in load_pt(files.star_pruner).items()})
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {files.root} does not match its config.json: "
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    for key, value in state.items():
        shape = model.state_dict()[key].shape
        if value.shape != shape:
            raise CheckpointError(f"weight {key} has shape {tuple(value.shape)} in the checkpoint, the config implies {tuple(shape)}")
    model.load_state_dict(state, assign=True, strict=True)
    model.restore_rope_precision()  # non-persistent buffers are not in the files
    leftovers = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftovers:
        raise CheckpointError(f"weights left uninitialised after loading: {leftovers[:5]}")
    cast_model(model, dtype, device)
    model.eval()
    if pruning is not None and star is not None and pruning.method != "lightvla_star":
        model.set_pruning(pruning)
    return model, files


def cast_model(model: LightVLAForActionPrediction, dtype: torch.dtype, device: str | torch.device) -> None:
    """Move to ``device`` and cast to ``dtype``, except the float32 proprio projector and RoPE frequencies."""
    for name, child in model.named_children():
        child.to(device=device, dtype=torch.float32 if name == "proprio_projector" else dtype)
    model.restore_rope_precision()


def save_checkpoint(
    model: LightVLAForActionPrediction,
    out_dir: str | Path,
    step: int,
    statistics: dict | None = None,
    source: CheckpointFiles | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
    weights_dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """Write ``model`` in the release layout (bf16 weights like the releases, fp32 heads), loadable by ``load_model``.

    Tokenizer and processor files are copied from ``source``; so is its LM head, which we never train or use.
    ``state_dict`` replaces ``model.state_dict()`` for the core weights (the trainer passes LoRA-merged weights);
    ``weights_dtype`` float32 keeps small fine-tuned models exact.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = model.state_dict() if state_dict is None else state_dict
    core = {k: v for k, v in state.items() if k.split(".")[0] in ("vision_backbone", "projector", "llm")}
    tensors = {k: v.detach().to("cpu", weights_dtype).contiguous() for k, v in model_to_release_keys(core).items()}
    lm_head = _read_tensor(source.weights, LM_HEAD_KEY) if source is not None else None
    # the reference loader expects an LM head; without a source one, the input embeddings stand in (tied weights)
    tensors[LM_HEAD_KEY] = (lm_head if lm_head is not None else tensors["language_model.model.embed_tokens.weight"]).to(weights_dtype).clone()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    _save_pt(model.action_head, out / f"action_head--{step}_checkpoint.pt")
    if model.proprio_projector is not None:
        _save_pt(model.proprio_projector, out / f"proprio_projector--{step}_checkpoint.pt")
    if model.star_pruner is not None:
        _save_pt(model.star_pruner, out / f"lightvla_star--{step}_checkpoint.pt")
    config = model.config
    if statistics is not None:
        config.norm_stats = statistics
    (out / "config.json").write_text(json.dumps(config.to_dict(model.star_layout), indent=2))
    if config.norm_stats:
        (out / "dataset_statistics.json").write_text(json.dumps(config.norm_stats, indent=2))
    if source is not None and source.root.resolve() != out.resolve():
        for name in TOKENIZER_FILES:
            if (source.root / name).is_file():
                shutil.copy2(source.root / name, out / name)
    return out


def _save_pt(module: torch.nn.Module, path: Path) -> None:
    for stale in path.parent.glob(re.sub(r"--\d+_", "--*_", path.name)):
        stale.unlink()
    torch.save({f"module.{k}": v.detach().to("cpu", torch.float32).clone() for k, v in module.state_dict().items()}, path)


def _read_tensor(paths: list[Path], key: str) -> torch.Tensor | None:
    for path in paths:
        with safe_open(str(path), framework="pt") as f:
            if key in f.keys():
                return f.get_tensor(key)
    return None

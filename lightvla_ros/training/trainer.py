"""Fine-tuning with differentiable token pruning (docs/model-notes.md §6-§7).

The recipe: start from a release-layout checkpoint; LoRA (rank 32, alpha 16, dropout 0, Gaussian init) on every
linear layer of the vision encoders, projector and LLM, or full fine-tuning for small models; a fresh L1 head and
proprio projector (or the checkpoint's); AdamW with a step decay; the pruner's selection noise annealed linearly
from 1 to exactly 0 at the last step; bf16 autocast on CUDA; gradient accumulation; the reference's image
augmentation. The loss is the L1 distance between predicted and normalised action chunks, nothing else.

Output folder layout::

    OUT/train_config.json, OUT/metrics.csv, OUT/tensorboard/ (when TensorBoard is installed)
    OUT/checkpoints/step-NNNNNN/   release layout (LoRA merged) + dataset_statistics.json + training_state.pt
    OUT/final/                     the last step's checkpoint, what `lightvla predict` and the node load

``training_state.pt`` (optimizer, scheduler, step, data position and the trainable tensors: LoRA adapters, heads,
LightVLA* queries, or every weight in full fine-tuning) is read back with ``weights_only=True``. Under ``torchrun``
each process trains on its share of every batch through ``torch.nn.parallel.DistributedDataParallel``.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from lightvla_ros.model.checkpoint import CheckpointFiles, load_model, read_config, save_checkpoint
from lightvla_ros.model.configuration import READOUT_MODES, PruningConfig
from lightvla_ros.model.errors import InputError
from lightvla_ros.model.heads import L1RegressionActionHead, ProprioProjector
from lightvla_ros.model.modeling import LightVLAForActionPrediction
from lightvla_ros.model.processing import ImageProcessor, Normalizer, PromptBuilder
from lightvla_ros.model.pruning import linear_noise_scale
from lightvla_ros.training.augment import Augmentation
from lightvla_ros.training.data import DataReport, Episode, check_episodes, read_dataset
from lightvla_ros.training.dataset import Batch, ChunkDataset, EpochSampler, collate
from lightvla_ros.training.statistics import compute_statistics, default_action_mask

STATE_FILE = "training_state.pt"
REFERENCE_BATCH = 64  # the LightVLA / OpenVLA-OFT LIBERO recipe: 8 per GPU x 8 GPUs
METRIC_FIELDS = ("step", "loss", "lr", "noise_scale", "kept_tokens", "samples_per_s", "elapsed_s", "val_l1", "val_kept")
CORE_MODULES = ("vision_backbone", "projector", "llm")


@dataclass
class TrainConfig:
    """Every option of a run; saved with each checkpoint so a resumed run continues the same recipe."""

    checkpoint: str
    out: str
    data: str | None = None
    data_config: str | None = None
    dataset_name: str | None = None
    pruning: str = "lightvla"
    noise: str = "uniform"
    star_num_queries: int = 64
    star_position: str = "llm"
    star_llm_layer: int = 1
    star_vision_block: int = 0
    steps: int = 10_000
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 5e-4
    lr_milestones: list[int] | None = None  # default: one decay at 75% of the run (the reference's 30k of 40k)
    lr_gamma: float = 0.1
    weight_decay: float = 0.01
    lora_rank: int = 32  # 0: full fine-tuning
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    fresh_heads: bool = True
    chunk_len: int | None = None  # with fresh heads: the chunk length (default: the checkpoint's)
    gripper_dims: list[int] = field(default_factory=lambda: [-1])
    augment: bool = True
    loss: str = "l1"  # l1 (the reference's); mse only to pre-train a base from scratch (see experiments/pruning_study/study.py)
    readout: str = "last"
    dtype: str = "auto"  # base weights: auto = bfloat16 for LoRA on CUDA, else float32
    save_dtype: str = "bfloat16"
    save_every: int = 0  # 0: only the final checkpoint
    keep_checkpoints: int = 2
    val_episodes: int = 0
    eval_every: int = 0  # 0: evaluate the held-out episodes at each save only
    log_every: int = 10
    seed: int = 7
    num_workers: int = 2
    device: str = "auto"
    skip_bad_episodes: bool = False
    progress: bool = True

    def pruning_config(self) -> PruningConfig:
        return PruningConfig(self.pruning, noise=self.noise, star_num_queries=self.star_num_queries, star_position=self.star_position,
                             star_llm_layer=self.star_llm_layer, star_vision_block=self.star_vision_block)

    def milestones(self) -> list[int]:
        return list(self.lr_milestones) if self.lr_milestones is not None else [max(1, int(0.75 * self.steps))]

    def validate(self) -> None:
        self.pruning_config()
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise InputError("steps, batch size and gradient accumulation must be >= 1")
        if self.readout not in READOUT_MODES:
            raise InputError(f"readout must be one of {', '.join(READOUT_MODES)}, got {self.readout!r}")
        if self.loss not in ("l1", "mse"):
            raise InputError(f"loss must be 'l1' or 'mse', got {self.loss!r}")
        if self.save_dtype not in ("bfloat16", "float32") or self.dtype not in ("auto", "bfloat16", "float32"):
            raise InputError("dtype must be auto|bfloat16|float32 and save dtype bfloat16|float32")
        if self.lora_rank < 0:
            raise InputError("LoRA rank must be >= 0 (0 = full fine-tuning)")


@dataclass
class Distributed:
    """This process's place in a ``torchrun`` launch (rank 0 of 1 without one)."""

    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> "Distributed":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size())

    def mean(self, value: float, device: torch.device) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def unused_modules(model: LightVLAForActionPrediction) -> list[nn.Module]:
    """Modules that never see data: each ViT's last block and final norm (features come from the block before)."""
    return [m for vit in model.vision_backbone.featurizers for m in (vit.blocks[-1], vit.norm, vit.fc_norm)]


def lora_target_modules(model: LightVLAForActionPrediction) -> list[str]:
    """Every nn.Linear of the vision encoders, projector and LLM that takes part in the forward pass (peft's
    "all-linear"), never the heads."""
    unused = {id(sub) for module in unused_modules(model) for sub in module.modules()}
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and name.split(".")[0] in CORE_MODULES and id(module) not in unused]


def merged_core_state(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The model's weights under their plain names, each LoRA adapter's delta added in float32 and the sum moved to
    the CPU in ``dtype`` one layer at a time (the model itself is untouched, so training continues exactly)."""
    from peft.tuners.lora import Linear as LoraLinear

    state = {key.replace(".base_layer.", "."): value for key, value in model.state_dict().items() if "lora_" not in key}
    for name, module in model.named_modules():
        if isinstance(module, LoraLinear):
            key = f"{name}.weight"
            merged = state[key].detach().float()
            for adapter in module.active_adapters:
                merged = merged + module.get_delta_weight(adapter).detach().float()
            state[key] = merged.to("cpu", dtype)
    return state


class Trainer:
    """One fine-tuning run. ``episodes`` (already in memory, e.g. the toy task) replace reading ``config.data``."""

    def __init__(self, config: TrainConfig, episodes: list[Episode] | None = None, resume: str | Path | None = None,
                 log: Any = None) -> None:
        self.log = log or (lambda text: print(text, file=sys.stderr))
        resume_state = None
        if resume is not None:
            resume_dir = find_resume_dir(Path(resume))
            resume_state = torch.load(resume_dir / STATE_FILE, map_location="cpu", weights_only=True)
            saved = json.loads(resume_state["config"])
            overrides = {k: getattr(config, k) for k in ("out", "device", "num_workers", "progress", "save_every", "keep_checkpoints")}
            config = TrainConfig(**{**saved, **overrides})
            self.log(f"resuming {resume_dir} at step {int(resume_state['step'])}")
        config.validate()
        self.config = config
        self.device = _resolve_device(config.device)
        self.dist = Distributed.from_env(self.device)
        if self.dist.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.out = Path(config.out)
        self.source = CheckpointFiles.discover(config.checkpoint)
        base_config, _ = read_config(self.source, None)
        self.processor = ImageProcessor.from_file(self.source.preprocessor, base_config.vision.num_featurizers)

        report = DataReport(config.data or "in-memory episodes")
        if episodes is None:
            if config.data is None:
                raise InputError("no training data: pass --data (a rosbag2 recording or a LeRobot dataset folder)")
            episodes = read_dataset(config.data, data_config=config.data_config, image_size=self.processor.size, report=report,
                                    num_images=base_config.num_images)
        action_dim, state_dim = self._data_dims(episodes, base_config)
        episodes = check_episodes(episodes, report, num_images=base_config.num_images, state_dim=state_dim, action_dim=action_dim,
                                  skip_bad=config.skip_bad_episodes)
        if self.dist.main:
            self.log(report.text(len(episodes), sum(len(e) for e in episodes)))
        if config.val_episodes >= len(episodes):
            raise InputError(f"--val-episodes {config.val_episodes} leaves no training episodes (have {len(episodes)})")
        split = len(episodes) - config.val_episodes
        self.train_episodes, self.val_episodes = episodes[:split], episodes[split:]
        if self.dist.main:
            self.log(run_header(config, self.dist.world, self.train_episodes, self.val_episodes))

        key = config.dataset_name or (Path(config.data).name if config.data else "dataset")
        if resume_state is not None:
            self.statistics = json.loads((resume_dir / "dataset_statistics.json").read_text())
        else:
            mask = default_action_mask(action_dim, config.gripper_dims)
            self.statistics = compute_statistics(self.train_episodes, key, mask)
        self.normalizer = Normalizer.from_statistics(self.statistics, None)

        self.model = self._build_model(action_dim, state_dim)
        if config.lora_rank > 0:
            self._apply_lora()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.trainable_names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=config.milestones(), gamma=config.lr_gamma)
        self.step = 0
        self.epoch, self.batch_in_epoch = 0, 0
        if resume_state is not None:
            self._load_state(resume_state)
        self.engine: nn.Module = self.model
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.engine = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

        config_ = self.model.config
        self.prompts = PromptBuilder(self.source.tokenizer, config_.num_action_slots, config_.stop_token_id, config_.action_prefix_token_id,
                                     max_tokens=int(config_.text["max_position_embeddings"]) - 1 - config_.num_patches - 1)
        self.dataset = ChunkDataset(self.train_episodes, self.processor, self.prompts, self.normalizer, config_.chunk_len,
                                    Augmentation() if config.augment else None, center_crop=config.augment, seed=config.seed)
        if len(self.dataset) < config.batch_size * self.dist.world:
            raise InputError(f"{len(self.dataset)} training frames are fewer than one batch ({config.batch_size} x {self.dist.world} processes)")
        self.val_dataset = None
        if self.val_episodes:
            self.val_dataset = ChunkDataset(self.val_episodes, self.processor, self.prompts, self.normalizer, config_.chunk_len, None,
                                            center_crop=config.augment, seed=config.seed)
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------------------------------------ set-up
    def _data_dims(self, episodes: list[Episode], base) -> tuple[int, int | None]:
        """Action and state sizes: the data's with fresh heads (a new robot), else the checkpoint's."""
        if not self.config.fresh_heads or not episodes:
            return base.action_dim, base.proprio_dim
        first = next((e for e in episodes if len(e)), episodes[0])
        action_dim = int(first.actions.shape[1]) if first.actions.ndim == 2 else base.action_dim
        state_dim = None if first.states is None else int(first.states.shape[1])
        return action_dim, state_dim

    def _base_dtype(self) -> torch.dtype:
        if self.config.dtype == "auto":
            return torch.bfloat16 if self.device.type == "cuda" and self.config.lora_rank > 0 else torch.float32
        return torch.bfloat16 if self.config.dtype == "bfloat16" else torch.float32

    def _build_model(self, action_dim: int, state_dim: int | None) -> LightVLAForActionPrediction:
        config = self.config
        pruning = config.pruning_config()
        load_pruning = PruningConfig(pruning.method if pruning.method != "lightvla_star" else "lightvla", noise=pruning.noise)
        model, _ = load_model(config.checkpoint, load_pruning, None, self._base_dtype(), self.device)
        torch.manual_seed(config.seed)
        if pruning.method == "lightvla_star":
            if model.star_pruner is None:
                model.add_star_pruner(pruning)
            else:
                model.set_pruning(pruning)
        model.set_readout(config.readout)
        if config.fresh_heads:
            mc = model.config
            mc.action_dim, mc.proprio_dim = action_dim, state_dim
            mc.chunk_len = config.chunk_len or mc.chunk_len
            hidden = mc.head_hidden_dim or mc.llm_dim
            model.action_head = L1RegressionActionHead(mc.llm_dim, hidden, action_dim, mc.chunk_len).to(self.device)
            model.proprio_projector = ProprioProjector(state_dim, mc.llm_dim).to(self.device) if state_dim else None
        elif config.chunk_len not in (None, model.config.chunk_len):
            raise InputError("--chunk-len can only change with fresh heads (the checkpoint's head has a fixed chunk)")
        for module in (model.action_head, model.proprio_projector, model.star_pruner):
            if module is not None:
                module.float()
        model.train()
        for p in model.parameters():
            p.requires_grad_(config.lora_rank == 0)
        for module in unused_modules(model):
            module.requires_grad_(False)
        return model

    def _apply_lora(self) -> None:
        from peft import LoraConfig, get_peft_model

        config = self.config
        torch.manual_seed(config.seed + 1)
        lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=lora_target_modules(self.model), init_lora_weights="gaussian", bias="none")
        get_peft_model(self.model, lora)  # injects the adapters into self.model in place; we keep calling self.model
        for module in (self.model.action_head, self.model.proprio_projector, self.model.star_pruner):
            if module is not None:
                module.requires_grad_(True)

    # ------------------------------------------------------------------------------------------------ loop
    def _batches(self) -> Iterator[Batch]:
        """Endless batches across epochs, starting from the saved data position when resuming."""
        config = self.config
        sampler = EpochSampler(len(self.dataset), config.seed, self.dist.rank, self.dist.world)
        while True:
            sampler.epoch, self.dataset.epoch = self.epoch, self.epoch
            sampler.start = self.batch_in_epoch * config.batch_size
            loader = DataLoader(self.dataset, batch_size=config.batch_size, sampler=sampler, drop_last=True,
                                num_workers=config.num_workers, collate_fn=partial(collate, pad_token_id=self.model.config.pad_token_id),
                                pin_memory=self.device.type == "cuda")
            for batch in loader:
                self.batch_in_epoch += 1
                yield batch
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def noise_scale(self, step: int) -> float:
        """1 at the first step, exactly 0 at the last one (the reference's 1 - step/max_steps, ending at 0)."""
        return linear_noise_scale(step, self.config.steps - 1)

    def run(self, until: int | None = None) -> Path:
        """Train to ``config.steps`` (or stop early at step ``until``, e.g. to fit a time slot; resume later) and
        return the final checkpoint folder."""
        config = self.config
        until = config.steps if until is None else min(until, config.steps)
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "train_config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
        writer = _tensorboard(self.out / "tensorboard") if self.dist.main else None
        metrics = _MetricsFile(self.out / "metrics.csv", resume=self.step > 0) if self.dist.main else None
        progress = _progress(config, self.step) if self.dist.main and config.progress else None
        batches = self._batches()
        generator = torch.Generator(device=self.device)
        start_time, window_start, window_samples = time.time(), time.time(), 0
        self.model.train()
        try:
            while self.step < until:
                step = self.step
                noise = self.noise_scale(step)
                loss_sum, kept_sum = 0.0, 0.0
                for micro in range(config.grad_accum):
                    batch = next(batches).to(self.device)
                    generator.manual_seed(((config.seed * 1_000_003 + step) * 64 + micro) * 4096 + self.dist.rank)
                    sync = micro == config.grad_accum - 1 or self.dist.world == 1
                    with (contextlib.nullcontext() if sync else self.engine.no_sync()), self._autocast():
                        out = self.engine(batch.pixel_values, batch.text_ids, batch.text_lengths, batch.proprio,
                                          noise_scale=noise, generator=generator)
                        error = out.normalized_actions.float() - batch.actions
                        loss = error.pow(2).mean() if config.loss == "mse" else error.abs().mean()
                    (loss / config.grad_accum).backward()
                    loss_sum += float(loss.detach())
                    kept_sum += float(np.mean([len(k) for k in out.kept_patch_indices]))
                    window_samples += len(batch) * self.dist.world
                lr = self.optimizer.param_groups[0]["lr"]
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                loss_value = self.dist.mean(loss_sum / config.grad_accum, self.device)
                kept_value = self.dist.mean(kept_sum / config.grad_accum, self.device)
                if not math.isfinite(loss_value):
                    raise FloatingPointError(f"loss became {loss_value} at step {step}; lower the learning rate or check the data")
                row: dict[str, float] = {"step": self.step, "loss": loss_value, "lr": lr, "noise_scale": noise, "kept_tokens": kept_value}
                saving = self.step == config.steps or bool(config.save_every and self.step % config.save_every == 0)
                evaluating = saving or bool(config.eval_every and self.step % config.eval_every == 0)
                if evaluating and self.val_dataset is not None:
                    row["val_l1"], row["val_kept"] = self.evaluate(self.val_dataset)
                if self.step % config.log_every == 0 or evaluating or self.step == 1:
                    now = time.time()
                    row["samples_per_s"] = window_samples / max(now - window_start, 1e-9)
                    row["elapsed_s"] = now - start_time
                    window_start, window_samples = now, 0
                    self.history.append(row)
                    if metrics is not None:
                        metrics.write(row)
                    if writer is not None:
                        for name, value in row.items():
                            if name != "step":
                                writer.add_scalar(f"train/{name}", value, self.step)
                if progress is not None:
                    progress.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", noise=f"{noise:.3f}", kept=f"{kept_value:.1f}", refresh=False)
                    progress.update(1)
                if saving:
                    self.save()
        finally:
            if progress is not None:
                progress.close()
            if writer is not None:
                writer.close()
            if metrics is not None:
                metrics.close()
        return self.out / "final"

    @torch.no_grad()
    def evaluate(self, dataset: ChunkDataset, batch_size: int | None = None) -> tuple[float, float]:
        """Mean L1 on normalised action chunks and mean kept visual tokens, with inference-time pruning."""
        was_training = self.model.training
        self.model.eval()
        loader = DataLoader(dataset, batch_size=batch_size or self.config.batch_size, shuffle=False,
                            collate_fn=partial(collate, pad_token_id=self.model.config.pad_token_id))
        errors, kept = [], []
        for batch in loader:
            batch = batch.to(self.device)
            with self._autocast():
                out = self.model(batch.pixel_values, batch.text_ids, batch.text_lengths, batch.proprio)
            errors.append((out.normalized_actions.float() - batch.actions).abs().mean(dim=(1, 2)).cpu())
            kept += [len(k) for k in out.kept_patch_indices]
        self.model.train(was_training)
        return float(torch.cat(errors).mean()), float(np.mean(kept))

    # ------------------------------------------------------------------------------------------------ state
    def save(self) -> Path:
        """Write the release-layout checkpoint (LoRA merged) with the training state; keep the newest few."""
        folder = self.out / "checkpoints" / f"step-{self.step:06d}"
        if self.dist.main:
            dtype = torch.float32 if self.config.save_dtype == "float32" else torch.bfloat16
            save_checkpoint(self.model, folder, self.step, self.statistics, self.source, state_dict=merged_core_state(self.model, dtype),
                            weights_dtype=dtype)
            torch.save(self._state(), folder / STATE_FILE)
            (folder / "train_config.json").write_text(json.dumps(dataclasses.asdict(self.config), indent=2))
            if self.step == self.config.steps:
                final = self.out / "final"
                if final.exists():
                    shutil.rmtree(final)
                shutil.copytree(folder, final, ignore=shutil.ignore_patterns(STATE_FILE))
            self._prune_old()
        self.dist.barrier()
        return folder

    def _prune_old(self) -> None:
        folders = sorted((self.out / "checkpoints").glob("step-*"))
        for old in folders[: max(0, len(folders) - max(1, self.config.keep_checkpoints))]:
            shutil.rmtree(old)

    def _state(self) -> dict[str, Any]:
        params = dict(self.model.named_parameters())
        scheduler = self.scheduler.state_dict()
        scheduler["milestones"] = dict(scheduler["milestones"])
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "config": json.dumps(dataclasses.asdict(self.config)),
            "trainable": {name: params[name].detach().cpu().clone() for name in self.trainable_names},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": scheduler,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        params = dict(self.model.named_parameters())
        missing = [n for n in self.trainable_names if n not in state["trainable"]]
        if missing:
            raise InputError(f"the training state does not match this model (missing {missing[:3]})")
        with torch.no_grad():
            for name in self.trainable_names:
                params[name].copy_(state["trainable"][name].to(params[name].dtype))
        self.optimizer.load_state_dict(state["optimizer"])
        scheduler = dict(state["scheduler"])
        scheduler["milestones"] = collections.Counter({int(k): int(v) for k, v in scheduler["milestones"].items()})
        self.scheduler.load_state_dict(scheduler)
        self.step, self.epoch, self.batch_in_epoch = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])


def run_header(config: TrainConfig, world: int, train: list[Episode], val: list[Episode]) -> str:
    """What the run will do, with the effective batch against the reference's (a one-GPU run has an eighth of it)."""
    per_step = config.batch_size * world * config.grad_accum
    tuning = f"LoRA rank {config.lora_rank} alpha {config.lora_alpha}" if config.lora_rank else "full fine-tuning"
    lines = [f"run: {len(train)} training episode(s), {sum(len(e) for e in train)} frames; {len(val)} held out",
             f"  {config.steps} steps, lr {config.lr:g} x {config.lr_gamma:g} at step(s) {config.milestones()}, {tuning}",
             f"  effective batch {per_step} samples per step = {config.batch_size} per process x {world} process(es) x "
             f"{config.grad_accum} accumulation (reference recipe: {REFERENCE_BATCH} = 8 GPUs x 8)"]
    if per_step < REFERENCE_BATCH:
        accum = math.ceil(REFERENCE_BATCH / (config.batch_size * world))
        lines.append(f"  for the reference's batch use --grad-accum {accum} ({config.batch_size * world * accum} per step; "
                     f"each step then takes {accum / config.grad_accum:g}x as long)")
    return "\n".join(lines)


def find_resume_dir(path: Path) -> Path:
    """A checkpoint folder with a training state, or a run's output folder (its newest checkpoint)."""
    if (path / STATE_FILE).is_file():
        return path
    candidates = sorted((path / "checkpoints").glob("step-*"))
    candidates = [c for c in candidates if (c / STATE_FILE).is_file()]
    if not candidates:
        raise InputError(f"nothing to resume in {path}: no {STATE_FILE} there or under {path}/checkpoints/step-*")
    return candidates[-1]


def _resolve_device(name: str) -> torch.device:
    from lightvla_ros.policy import resolve_device

    return resolve_device(name)


class _MetricsFile:
    def __init__(self, path: Path, resume: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        append = resume and path.is_file()
        self.file = path.open("a" if append else "w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=METRIC_FIELDS)
        if not append:
            self.writer.writeheader()

    def write(self, row: dict[str, float]) -> None:
        self.writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(path))


def _progress(config: TrainConfig, start: int):
    from tqdm import tqdm

    return tqdm(total=config.steps, initial=start, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr)

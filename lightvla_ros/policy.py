"""The policy: instruction + camera images + robot state -> un-normalised action chunk + pruning statistics.

This is the layer the ROS node and the command line talk to. It owns the checkpoint's processor, tokenizer and
statistics, validates every observation before it reaches torch, and is safe to call from one worker thread while
another thread changes the pruning settings.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from lightvla_ros.contract import Observation, PolicyOutput, PolicySettings
from lightvla_ros.model.allocator import set_allocator
from lightvla_ros.model.checkpoint import CheckpointFiles, load_model, read_statistics
from lightvla_ros.model.configuration import (
    DTYPE_CHOICES,
    PREPROCESSING_CHOICES,
    READOUT_MODES,
    SDPA_BACKENDS,
    PruningConfig,
)
from lightvla_ros.model.errors import CheckpointError, InputError
from lightvla_ros.model.flops import ModelShape, count_flops
from lightvla_ros.model.modeling import LightVLAForActionPrediction, StageTimer
from lightvla_ros.model.processing import ImageProcessor, Normalizer, PromptBuilder, pad_prompts
from lightvla_ros.model.pruning import FixedCountPruner
from lightvla_ros.model.quantization import quantize_model

DTYPES = {name: getattr(torch, name) for name in DTYPE_CHOICES if name != "auto"}


def resolve_device(device: str) -> torch.device:
    """``auto`` picks the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} requested but CUDA is not available here (torch {torch.__version__}); use cpu")
        index = resolved.index or 0
        if index >= torch.cuda.device_count():
            raise InputError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device("cuda", index)
    if resolved.type != "cpu":
        raise InputError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on CUDA (what the checkpoints were trained in), float32 on the CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; use auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def sdpa_context(backend: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the context that restricts scaled-dot-product attention to ``backend`` (``auto``: torch picks).

    flash and efficient take no arbitrary attention mask on CUDA: with kept-token buckets or batches of
    different prompt lengths the LLM's padding mask makes them fail; math and cudnn always run."""
    if backend not in SDPA_BACKENDS:
        raise InputError(f"sdpa_backend must be one of {', '.join(SDPA_BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return contextlib.nullcontext
    if device.type == "cpu" and backend in ("efficient", "cudnn"):
        raise InputError(f"sdpa_backend {backend} needs CUDA; on the CPU use auto, math or flash")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kernel = {"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION,
              "efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[backend]
    return lambda: sdpa_kernel(kernel)


def return_freed_heap_memory() -> bool:
    """Ask glibc to give freed heap memory back to the system; returns whether it could be asked.

    Weight tensors of a few MB each are served from the heap once glibc's dynamic mmap threshold has grown, so
    freeing a model leaves the process's resident memory unchanged until the heap is trimmed.
    """
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True


class LightVLAPolicy:
    """A loaded checkpoint ready to act. Build it with :meth:`from_checkpoint`."""

    def __init__(self, model: LightVLAForActionPrediction, files: CheckpointFiles, normalizer: Normalizer,
                 center_crop: bool, device: torch.device, preprocessing: str = "oft") -> None:
        self.model = model
        self.files = files
        self.normalizer = normalizer
        self.center_crop = center_crop
        self.preprocessing = preprocessing
        self._device = device
        config = model.config
        self.processor = ImageProcessor.from_file(files.preprocessor, config.vision.num_featurizers)
        self.prompts = PromptBuilder(
            files.tokenizer,
            num_action_slots=config.num_action_slots,
            stop_token_id=config.stop_token_id,
            action_prefix_token_id=config.action_prefix_token_id,
            max_tokens=int(config.text["max_position_embeddings"]) - 1 - config.num_patches - 1,
        )
        self._shape = ModelShape.of(model)
        self._lock = threading.Lock()
        self._attention: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
        self.quantize = "none"
        self.quantized_layers: list[str] = []

    @classmethod
    def from_settings(cls, settings: PolicySettings) -> "LightVLAPolicy":
        """Build from the node's typed settings: ``cpu_threads`` > 0 also sets torch's intra-op thread count, the
        allocator is set process-wide, and the model is quantized, then compiled over its kept-token buckets."""
        if settings.cpu_threads > 0:
            torch.set_num_threads(settings.cpu_threads)
        from lightvla_ros.model.acceleration import Acceleration, accelerate  # imports torch._dynamo

        set_allocator(settings.allocator)
        acceleration = Acceleration.for_mode(settings.compile_mode, settings.kept_token_buckets or None,
                                             backend=settings.compile_backend)
        policy = cls.from_checkpoint(
            settings.checkpoint, device=settings.device, dtype=settings.dtype, pruning=settings.pruning,
            max_kept_tokens=settings.max_kept_tokens, unnorm_key=settings.unnorm_key,
            center_crop=settings.center_crop, readout=settings.readout, num_images=settings.num_images,
            preprocessing=settings.preprocessing, quantize=settings.quantize, sdpa_backend=settings.sdpa_backend)
        accelerate(policy.model, acceleration)
        return policy

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint_dir: str | Path,
        device: str = "auto",
        dtype: str = "auto",
        pruning: str = "lightvla",
        max_kept_tokens: int | None = None,
        unnorm_key: str | None = None,
        center_crop: bool = False,
        readout: str = "last",
        num_images: int | None = None,
        preprocessing: str = "auto",
        quantize: str = "none",
        sdpa_backend: str = "auto",
    ) -> "LightVLAPolicy":
        """``preprocessing``: ``oft`` runs each frame through the authors' evaluation chain (JPEG round trip, TF
        Lanczos resize, and their TF centre crop when ``center_crop``), what the released checkpoints expect;
        ``plain`` hands frames to the processor as they are (Pillow crop), for checkpoints trained that way;
        ``auto`` is ``oft`` with ``center_crop`` (the LIBERO recipe) and ``plain`` without. ``quantize``: weight-only
        quantization of the LLM and projector after loading (:mod:`lightvla_ros.model.quantization`)."""
        if preprocessing not in PREPROCESSING_CHOICES:
            raise InputError(f"preprocessing must be one of {', '.join(PREPROCESSING_CHOICES)}, got {preprocessing!r}")
        if preprocessing == "auto":
            preprocessing = "oft" if center_crop else "plain"
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        if readout not in READOUT_MODES:
            raise InputError(f"readout must be one of {', '.join(READOUT_MODES)}, got {readout!r}")
        if num_images is not None and num_images < 1:
            raise InputError(f"num_images must be >= 1, got {num_images}")
        attention = sdpa_context(sdpa_backend, torch_device)
        model, files = load_model(checkpoint_dir, PruningConfig(pruning, max_kept_tokens), num_images, torch_dtype, torch_device)
        model.set_readout(readout)
        normalizer = Normalizer.from_statistics(read_statistics(files, model.config), unnorm_key)
        if model.config.proprio_dim is not None and normalizer.proprio_dim != model.config.proprio_dim:
            raise CheckpointError(f"statistics {normalizer.key!r} describe a {normalizer.proprio_dim}-d state, "
                                  f"the proprio projector takes {model.config.proprio_dim}")
        quantized = quantize_model(model, quantize)
        policy = cls(model, files, normalizer, center_crop, torch_device, preprocessing)
        policy.quantize, policy.quantized_layers, policy._attention = quantize, quantized, attention
        return policy

    # ------------------------------------------------------------------------------------------ properties
    @property
    def num_images(self) -> int:
        return self.model.config.num_images

    @property
    def use_proprio(self) -> bool:
        return self.model.proprio_projector is not None

    @property
    def proprio_dim(self) -> int | None:
        return self.model.config.proprio_dim

    @property
    def chunk_len(self) -> int:
        return self.model.config.chunk_len

    @property
    def action_dim(self) -> int:
        return self.model.config.action_dim

    @property
    def patches_per_image(self) -> int:
        return self.model.vision_backbone.patches_per_image

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def device_name(self) -> str:
        return torch.cuda.get_device_name(self._device) if self._device.type == "cuda" else "cpu"

    @property
    def dtype(self) -> str:
        return str(self.model.dtype).removeprefix("torch.")

    @property
    def checkpoint_dir(self) -> str:
        return str(self.files.root)

    @property
    def pruning(self) -> str:
        return self.model.pruning.method

    @property
    def max_kept_tokens(self) -> int | None:
        return self.model.pruning.max_kept_tokens

    @property
    def unnorm_key(self) -> str:
        return self.normalizer.key

    def check_pruning(self, method: str, max_kept_tokens: int | None) -> str:
        """Why ``method`` / ``max_kept_tokens`` cannot be used with this checkpoint, or '' (changes nothing)."""
        try:
            PruningConfig(method, max_kept_tokens)
        except InputError as exc:
            return str(exc)
        if method == "lightvla_star" and self.model.star_pruner is None:
            return "this checkpoint has no LightVLA* queries; use pruning 'lightvla' or 'none'"
        return ""

    def set_pruning(self, method: str, max_kept_tokens: int | None) -> None:
        """Change pruning between two predictions (validated; raises InputError and changes nothing if invalid)."""
        config = PruningConfig(method, max_kept_tokens, noise=self.model.pruning.noise)
        with self._lock:
            self.model.set_pruning(config)

    # ------------------------------------------------------------------------------------------ inference
    def predict(self, images: Sequence[Any], instruction: str, proprio: Any = None) -> PolicyOutput:
        """One observation -> one action chunk (see :class:`PolicyOutput`)."""
        return self.predict_batch([Observation(images, instruction, proprio)])[0]

    def predict_batch(self, observations: Sequence[Observation]) -> list[PolicyOutput]:
        """Several observations in one forward pass; each result equals that observation predicted alone."""
        if not observations:
            raise InputError("no observations given")
        start = time.perf_counter()
        pixels, ids, lengths, proprio = self.prepare(observations)
        preprocess_ms = (time.perf_counter() - start) * 1e3
        timer = StageTimer(self._device)
        with self._lock, torch.inference_mode(), self._attention():
            out = self.model(pixels, ids, lengths, proprio, num_images=self.num_images, timer=timer)
            normalized = out.normalized_actions.float().cpu().numpy()
        timings = {"preprocess": preprocess_ms, **timer.ms, "total": (time.perf_counter() - start) * 1e3}
        if not np.all(np.isfinite(normalized)):
            raise FloatingPointError("the model produced non-finite actions (NaN/inf); the chunk was discarded")
        results = []
        for b in range(len(observations)):
            kept = out.kept_patch_indices[b].cpu().numpy().astype(np.int64)
            flops = self._flops(len(kept), int(lengths[b]))
            results.append(PolicyOutput(
                actions=self.normalizer.unnormalize_actions(normalized[b]).astype(np.float32),
                normalized_actions=normalized[b].astype(np.float32),
                kept_patch_indices=kept,
                num_kept=len(kept),
                num_patches=out.num_patches,
                patches_per_image=self.patches_per_image,
                grid_size=int(round(self.patches_per_image ** 0.5)),
                keep_ratio=len(kept) / out.num_patches,
                flops=flops,
                timings_ms=timings,
            ))
        return results

    def warmup(self, iterations: int = 2) -> None:
        """Run dummy predictions so the first real one is not slowed by lazy initialisation, then, with kept-token
        buckets, one per bucket with exactly that many kept tokens, so that every bucket's compiled graph exists
        before the first real chunk."""
        size = self.processor.size
        images = [np.full((size, size, 3), 127, np.uint8) for _ in range(self.num_images)]
        proprio = 0.5 * (self.normalizer.proprio_low + self.normalizer.proprio_high) if self.use_proprio else None
        for _ in range(iterations):
            self.predict(images, "warm up", proprio)
        num_patches = self.num_images * self.patches_per_image
        counts = sorted({min(bucket, num_patches) for bucket in self.model.kept_token_buckets})
        if not counts:
            return
        pruner, pruning = self.model.pruner, self.model.pruning
        try:
            self.model.set_pruning(PruningConfig("lightvla"))
            for count in counts:
                self.model.pruner = FixedCountPruner(count)
                self.predict(images, "warm up", proprio)
        finally:
            self.model.pruner, self.model.pruning = pruner, pruning

    def release(self) -> None:
        """Drop the weights and return the accelerator's cached memory (the node's lifecycle cleanup)."""
        with self._lock:
            self.model = None  # type: ignore[assignment]
        gc.collect()
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
        return_freed_heap_memory()

    # ------------------------------------------------------------------------------------------ helpers
    def prepare(self, observations: Sequence[Observation]):
        """The model's inputs for a batch: pixel values, padded prompt ids, prompt lengths and normalised proprio."""
        pixels, rows, states = [], [], []
        for obs in observations:
            if len(obs.images) != self.num_images:
                raise InputError(f"got {len(obs.images)} image(s); this policy expects {self.num_images} (third-person first, then wrist)")
            pixels.append(self.processor(obs.images, crop=self.center_crop, preprocessing=self.preprocessing))
            rows.append(self.prompts(obs.instruction))
            if self.use_proprio:
                if obs.proprio is None:
                    raise InputError(f"this checkpoint needs the robot state ({self.proprio_dim} values) as proprio input")
                states.append(self.normalizer.normalize_proprio(obs.proprio))
        ids, lengths = pad_prompts(rows, self.model.config.pad_token_id)
        proprio = torch.from_numpy(np.stack(states)).to(self._device) if states else None
        return torch.stack(pixels).to(self._device), ids.to(self._device), lengths.to(self._device), proprio

    def _flops(self, num_kept: int, text_tokens: int) -> dict[str, float]:
        prompt_tokens = text_tokens - self.model.config.num_action_slots - 2  # without 29871/slots/stop
        pruned = self.model.pruning.method != "none"
        now = count_flops(self._shape, self.num_images, num_kept, prompt_tokens, self.use_proprio, pruned)
        full = count_flops(self._shape, self.num_images, None, prompt_tokens, self.use_proprio, False)
        return {"total": now.total, "unpruned_total": full.total, "saved_fraction": 1.0 - now.total / full.total}

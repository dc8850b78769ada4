"""Inference speed-ups that leave the results unchanged: ``torch.compile`` of the per-token stages with CUDA graphs
over bucketed kept-token counts (GPUs), and the allocator setting (CPUs).

The pruned LLM input has a data-dependent length (1 + K + task tokens). Compiled kernels and CUDA graphs want
static shapes, so the kept tokens are padded up to the next bucket (masked keys: the result is unchanged) and
each bucket gets its own compiled graph. ``reduce-overhead`` is inductor's CUDA-graph mode: it records one graph
per bucket on static input buffers and replays it, removing the per-kernel launch cost that dominates batch-1
decoding on large GPUs. On the CPU the same code runs without graphs (inductor skips them).

Jetson: NVIDIA's JetPack PyTorch wheels ship without Triton, so ``torch.compile``'s GPU backend is unavailable
there; use ``mode="none"`` (eager, SDPA) in bf16/fp16 on Jetson.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from dataclasses import dataclass

import torch
import torch._dynamo

from lightvla_ros.model.configuration import ALLOCATORS, COMPILE_MODES
from lightvla_ros.model.errors import InputError
from lightvla_ros.model.modeling import LightVLAForActionPrediction

# One graph per bucket: many small buckets waste little padding but cost warm-up time and graph memory.
DEFAULT_BUCKETS = (32, 64, 96, 128, 192, 256, 384, 512)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


@dataclass(frozen=True)
class Acceleration:
    compile_mode: str = "none"
    buckets: tuple[int, ...] = ()
    backend: str = "inductor"  # "eager" / "aot_eager" trace without generating code (fast; for tests)

    def __post_init__(self) -> None:
        if self.compile_mode not in COMPILE_MODES:
            raise InputError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}")

    @classmethod
    def for_mode(cls, compile_mode: str, buckets: tuple[int, ...] | None = None) -> "Acceleration":
        """``buckets`` None: :data:`DEFAULT_BUCKETS` for CUDA graphs (``reduce-overhead``), no padding otherwise."""
        if buckets is None:
            buckets = DEFAULT_BUCKETS if compile_mode == "reduce-overhead" else ()
        return cls(compile_mode, tuple(buckets))

    def describe(self) -> str:
        buckets = ",".join(map(str, self.buckets)) if self.buckets else "none"
        return f"compile={self.compile_mode}, kept-token buckets={buckets}"


def accelerate(model: LightVLAForActionPrediction, acceleration: Acceleration) -> None:
    """Apply ``acceleration`` to ``model`` in place (parameter names, and so checkpoints, are unaffected)."""
    model.set_kept_token_buckets(acceleration.buckets)
    if acceleration.compile_mode == "none":
        return
    # every bucket is a distinct static shape of the same decoder-layer code
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 2 * len(acceleration.buckets) + 8)
    options = {"backend": acceleration.backend, "dynamic": False if acceleration.buckets else None}
    if acceleration.compile_mode != "default" and acceleration.backend == "inductor":
        options["mode"] = acceleration.compile_mode
    for vit in model.vision_backbone.featurizers:
        for block in vit.blocks:
            block.compile(**options)
    model.projector.compile(**options)
    for layer in model.llm.layers:
        layer.compile(**options)
    model.action_head.compile(**options)


def keep_allocations_on_heap() -> bool:
    """Make glibc's malloc reuse freed memory instead of unmapping and re-mapping it. Returns whether it applied.

    glibc serves blocks above its mmap threshold (at most 32 MiB) with fresh ``mmap`` pages and unmaps them on free,
    so every forward pass page-faults its large activations in again (about 200k faults and 0.6 s of kernel time
    per unpruned 7b-shaped forward on the benchmark VM). With mmap disabled and a high trim threshold, freed blocks
    stay in the heap and are reused. The process keeps its peak memory; results are unchanged. Only glibc (Linux).
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def set_allocator(allocator: str) -> bool:
    """Apply an :data:`ALLOCATORS` choice process-wide; returns whether the process now uses it."""
    if allocator not in ALLOCATORS:
        raise InputError(f"allocator must be one of {', '.join(ALLOCATORS)}, got {allocator!r}")
    return allocator == "default" or keep_allocations_on_heap()

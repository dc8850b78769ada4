"""Optional speed-ups for GPUs: ``torch.compile`` of the per-token stages and CUDA graphs over bucketed kept counts
(the CPU allocator setting is in :mod:`lightvla_ros.model.allocator`).

The pruned LLM input has a data-dependent length (1 + K + task tokens). Compiled kernels and CUDA graphs want
static shapes, so the kept tokens are padded up to the next bucket (masked keys: the result is unchanged) and
each bucket gets its own compiled graph. ``reduce-overhead`` is inductor's CUDA-graph mode: it records one graph
per bucket on static input buffers and replays it, removing the per-kernel launch cost that dominates batch-1
decoding on large GPUs. On the CPU the same code runs without graphs (inductor skips them).

Jetson: NVIDIA's JetPack PyTorch wheels ship without Triton, so ``torch.compile``'s GPU backend is unavailable
there; use ``mode="none"`` (eager, SDPA) in bf16/fp16 on Jetson.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch._dynamo

from lightvla_ros.model.configuration import COMPILE_BACKENDS, COMPILE_MODES
from lightvla_ros.model.errors import InputError
from lightvla_ros.model.modeling import LightVLAForActionPrediction

# One graph per bucket: many small buckets waste little padding but cost warm-up time and graph memory.
DEFAULT_BUCKETS = (32, 64, 96, 128, 192, 256, 384, 512)


@dataclass(frozen=True)
class Acceleration:
    compile_mode: str = "none"
    buckets: tuple[int, ...] = ()
    backend: str = "inductor"  # "eager" / "aot_eager" trace without generating code (fast; for tests)

    def __post_init__(self) -> None:
        if self.compile_mode not in COMPILE_MODES:
            raise InputError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}")

        if self.backend not in COMPILE_BACKENDS:
            raise InputError(f"compile backend must be one of {', '.join(COMPILE_BACKENDS)}, got {self.backend!r}")
        if any(int(b) < 1 for b in self.buckets):
            raise InputError(f"kept-token buckets must be positive, got {list(self.buckets)}")

    @classmethod
    def for_mode(cls, compile_mode: str, buckets: Sequence[int] | None = None, backend: str = "inductor") -> "Acceleration":
        """``buckets`` None: :data:`DEFAULT_BUCKETS` for CUDA graphs (``reduce-overhead``), no padding otherwise."""
        if buckets is None:
            buckets = DEFAULT_BUCKETS if compile_mode == "reduce-overhead" else ()
        return cls(compile_mode, tuple(int(b) for b in buckets), backend)

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

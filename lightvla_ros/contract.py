"""The contract between the ROS node and a policy: what the node asks for and what it gets back.

Torch-free on purpose: the node, the command line and the tests' fake policies all type against these
definitions, and importing them costs nothing. :class:`lightvla_ros.policy.LightVLAPolicy` is the real
implementation of :class:`Policy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from lightvla_ros.model.errors import InputError

__all__ = ["InputError", "Observation", "Policy", "PolicyOutput", "PolicySettings"]


@dataclass(frozen=True)
class PolicySettings:
    """How to build a policy: the node's read-only model parameters, in one typed object."""

    checkpoint: str
    device: str = "auto"
    dtype: str = "auto"
    pruning: str = "lightvla"
    max_kept_tokens: int | None = None
    unnorm_key: str | None = None
    center_crop: bool = False
    preprocessing: str = "auto"
    readout: str = "last"
    num_images: int | None = None
    cpu_threads: int = 0
    quantize: str = "none"
    compile_mode: str = "none"
    compile_backend: str = "inductor"
    kept_token_buckets: tuple[int, ...] = ()
    sdpa_backend: str = "auto"
    allocator: str = "default"


@dataclass
class Observation:
    """One observation: images in model order (third-person first, then wrist), the task, the robot state."""

    images: Sequence[Any]
    instruction: str
    proprio: Any = None


@dataclass
class PolicyOutput:
    """One predicted action chunk with the pruning statistics of the forward pass that made it."""

    actions: np.ndarray  # (chunk_len, action_dim), un-normalised; the gripper dimension passes through
    normalized_actions: np.ndarray
    kept_patch_indices: np.ndarray  # ascending indices into all patches; camera k owns [k*P, (k+1)*P)
    num_kept: int
    num_patches: int
    patches_per_image: int
    grid_size: int
    keep_ratio: float
    flops: dict[str, float] = field(default_factory=dict)  # total, unpruned_total, saved_fraction
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "actions": self.actions.tolist(),
            "normalized_actions": self.normalized_actions.tolist(),
            "kept_patch_indices": self.kept_patch_indices.tolist(),
            "num_kept": self.num_kept,
            "num_patches": self.num_patches,
            "keep_ratio": self.keep_ratio,
            "flops": self.flops,
            "timings_ms": self.timings_ms,
        }


@runtime_checkable
class Policy(Protocol):
    """What the node needs from a loaded policy. Calls to ``predict`` come from one worker thread; ``set_pruning``
    may come from another thread between two predictions."""

    @property
    def num_images(self) -> int: ...

    @property
    def use_proprio(self) -> bool: ...

    @property
    def proprio_dim(self) -> int | None: ...

    @property
    def chunk_len(self) -> int: ...

    @property
    def action_dim(self) -> int: ...

    @property
    def patches_per_image(self) -> int: ...

    @property
    def device(self) -> str: ...

    @property
    def device_name(self) -> str:
        """A human name of the compute device (the GPU model on CUDA), for diagnostics' hardware id."""
        ...

    @property
    def dtype(self) -> str: ...

    def check_pruning(self, method: str, max_kept_tokens: int | None) -> str:
        """Why this pruning setting cannot be used with this checkpoint, or '' (changes nothing)."""
        ...

    def set_pruning(self, method: str, max_kept_tokens: int | None) -> None: ...

    def warmup(self) -> None: ...

    def predict(self, images: Sequence[Any], instruction: str, proprio: Any = None) -> PolicyOutput:
        """Raises :class:`InputError` for an observation it cannot use and FloatingPointError for non-finite
        actions; anything else is a fault of the model or the device."""
        ...

    def release(self) -> None:
        """Free the weights and any accelerator memory; the policy is unusable afterwards."""
        ...

"""Weight-only quantization of the LLM and the projector with torchao, applied once after loading.

A pruned 7B forward on a small GPU is bound by reading the LLM's weights (docs/performance.md, roofline), and its
bf16 weights (15.2 GB) do not fit a 16 GB Jetson Orin NX. Weight-only quantization stores the Linear weights of
the Llama decoder layers and the projector (6.8 of the model's 7.5 B parameters) in 8 or 4 bits with per-row or
per-group scales; activations, the vision towers (compute-bound at 512 tokens per camera), the embeddings, the
pruner and the action head stay in the model dtype.

What runs where with torchao 0.18 and torch 2.14 (probed on the CPU; the CUDA rows from torchao's code and docs):

- ``int8``: per-row int8 weights (``Int8WeightOnlyConfig``), any device and dtype.
- ``int4-gN``: 4-bit weights with one scale and zero point per N inputs. On CUDA torchao's tinygemm packing
  (``Int4WeightOnlyConfig``, tile-packed, 0.5 byte per weight), which needs bfloat16 and compute capability 8.0
  (Ampere, Hopper, Jetson Orin). On the CPU torchao has no packed int4 kernel in this build, so the weights are
  quantized to the same 4-bit grid but stored one per byte (``IntxWeightOnlyConfig``): int4 accuracy, int8 memory.
  On the CPU a Linear whose input width is not a multiple of N is left in the model dtype.
- ``fp8``: float8 e4m3 weights with per-row scales (``Float8WeightOnlyConfig``). On CUDA only where the GPU has
  fp8 (compute capability 8.9: Ada, Hopper; not Ampere or Jetson Orin); on the CPU it runs by dequantizing.

torchao is imported only when a mode other than ``none`` is asked for (``pip install torchao``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lightvla_ros.model.configuration import QUANTIZE_MODES
from lightvla_ros.model.errors import InputError

DEFAULT_INT4_GROUP = 128
# Modules whose Linear layers are quantized: the weight-read-bound part of a pruned forward.
QUANTIZED_MODULES = ("llm.layers.", "projector.")


@dataclass(frozen=True)
class Quantization:
    """A parsed ``quantize`` mode: ``kind`` none | int8 | int4 | fp8, and the int4 group size."""

    kind: str = "none"
    group_size: int | None = None

    @classmethod
    def parse(cls, mode: str) -> "Quantization":
        if mode not in QUANTIZE_MODES:
            raise InputError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}, got {mode!r}")
        if mode.startswith("int4"):
            return cls("int4", int(mode.removeprefix("int4-g")) if "-g" in mode else DEFAULT_INT4_GROUP)
        return cls(mode)

    @property
    def mode(self) -> str:
        return f"int4-g{self.group_size}" if self.kind == "int4" else self.kind

    def problem(self, device: torch.device, dtype: torch.dtype) -> str:
        """Why this mode cannot run on ``device`` in ``dtype``, or ''."""
        if self.kind == "none" or device.type != "cuda":
            return ""
        capability = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        if self.kind == "int4":
            if dtype != torch.bfloat16:
                return f"quantize {self.mode} on CUDA needs dtype bfloat16 (torchao's tinygemm int4 kernel), got {dtype}"
            if capability < (8, 0):
                return f"quantize {self.mode} needs a GPU of compute capability 8.0 or newer; {name} has {capability}"
        if self.kind == "fp8" and capability < (8, 9):
            return (f"quantize fp8 needs a GPU with fp8 support (compute capability 8.9: Ada, Hopper); {name} has "
                    f"{capability[0]}.{capability[1]}. Use int8 or int4")
        return ""

    def applies_to(self, layer: nn.Linear, device: torch.device) -> bool:
        """Whether this Linear gets quantized (CPU int4 needs whole groups; CUDA pads to whole groups)."""
        if self.kind == "int4" and device.type != "cuda":
            return layer.in_features % self.group_size == 0
        return True

    def torchao_config(self, device: torch.device) -> Any:
        torchao = _import_torchao()
        if self.kind == "int8":
            return torchao.Int8WeightOnlyConfig()
        if self.kind == "fp8":
            return torchao.Float8WeightOnlyConfig()
        if device.type == "cuda":
            return torchao.Int4WeightOnlyConfig(group_size=self.group_size, int4_packing_format="tile_packed_to_4d")
        from torchao.quantization.granularity import PerGroup

        return torchao.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(self.group_size))


def _import_torchao():
    try:
        with warnings.catch_warnings():  # torchao's import-time notes about optional kernels it did not find
            warnings.simplefilter("ignore")
            import torchao.quantization as quantization
    except ImportError as exc:
        raise InputError(f"weight quantization needs torchao ({exc}); install it with `pip install torchao`") from exc
    return quantization


def quantize_model(model: nn.Module, mode: str) -> list[str]:
    """Quantize ``model``'s LLM decoder and projector Linear weights in place; returns the names of the quantized
    layers. Raises InputError when ``mode`` cannot run on the model's device and dtype."""
    quantization = Quantization.parse(mode)
    if quantization.kind == "none":
        return []
    device, dtype = model.device, model.dtype
    reason = quantization.problem(device, dtype)
    if reason:
        raise InputError(reason)
    chosen = [name for name, module in model.named_modules()
              if isinstance(module, nn.Linear) and name.startswith(QUANTIZED_MODULES)
              and quantization.applies_to(module, device)]
    selected = set(chosen)

    def chosen_layer(module: nn.Module, name: str) -> bool:
        return name in selected

    config = quantization.torchao_config(device)
    from torchao.quantization import quantize_

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_(model, config, filter_fn=chosen_layer)
    return chosen


def stored_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor holds, counting every component of a torchao quantized tensor (data, scales, zero points)."""
    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is None or type(tensor) in (torch.Tensor, nn.Parameter):
        return tensor.numel() * tensor.element_size()
    names, _ = tensor.__tensor_flatten__()
    return sum(stored_bytes(getattr(tensor, name)) for name in names if getattr(tensor, name) is not None)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers of ``model`` as stored (quantized layers at their real size)."""
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(stored_bytes(t) for t in tensors.values())


def linear_weight_bytes(out_features: int, in_features: int, mode: str, dtype_bytes: int, device_type: str) -> int:
    """Bytes torchao stores for one Linear weight (bias excluded) in ``mode``: the layouts above, from the shape.

    int8 and fp8 add a float32 scale per row (int8 also an int8 zero point); CPU int4 stores one byte per weight and
    a model-dtype scale plus an int8 zero point per group; CUDA int4 pads inputs to 1024 and outputs to 8, packs two
    weights per byte and keeps a bf16 scale and zero per group."""
    quantization = Quantization.parse(mode)
    elements = out_features * in_features
    if quantization.kind == "none":
        return elements * dtype_bytes
    if quantization.kind == "int8":
        return elements + out_features * (4 + 1)
    if quantization.kind == "fp8":
        return elements + out_features * 4
    group = quantization.group_size
    if device_type == "cuda":
        padded_in, padded_out = -(-in_features // 1024) * 1024, -(-out_features // 8) * 8
        return padded_out * padded_in // 2 + padded_out * (padded_in // group) * 2 * 2
    if in_features % group:
        return elements * dtype_bytes
    return elements + out_features * (in_features // group) * (dtype_bytes + 1)


def planned_weight_bytes(model: nn.Module, mode: str, dtype_bytes: int, device_type: str) -> int:
    """Bytes of ``model``'s weights once quantized in ``mode`` on ``device_type``, from the shapes only: works on a
    model built on the meta device (the 7B), where nothing can be quantized."""
    quantization = Quantization.parse(mode)
    quantized: dict[int, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.startswith(QUANTIZED_MODULES):
            quantized[id(module.weight)] = linear_weight_bytes(module.out_features, module.in_features, quantization.mode,
                                                               dtype_bytes, device_type)
    total = 0
    for tensor in {id(t): t for t in [*model.parameters(), *model.buffers()]}.values():
        total += quantized.get(id(tensor), tensor.numel() * (dtype_bytes if tensor.is_floating_point() else tensor.element_size()))
    return total

"""Roofline floors for named accelerators: the least time one forward pass can take on them.

Two floors bound a forward pass from below: the compute floor (FLOPs / peak dense tensor throughput) and the
weight-read floor (bytes of weights read once / memory bandwidth). At batch 1 the LLM multiplies every weight
by only ``sequence length`` tokens, so on devices whose peak-FLOPs-to-bandwidth ratio exceeds the sequence
length the weight read, not the arithmetic, is the limit, and pruning tokens cannot beat it; smaller weights
(int8) can. The floors assume perfect overlap and peak clocks: real kernels reach perhaps 50-80% of either.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from lightvla_ros.model.modeling import LightVLAForActionPrediction


@dataclass(frozen=True)
class DeviceSpec:
    key: str
    name: str
    bf16_tflops: float  # dense tensor-core FP16/BF16 with FP32 accumulation (what PyTorch matmuls use)
    int8_tops: float  # dense INT8 tensor-core throughput
    bandwidth_gbs: float
    memory_gb: float
    source: str


# Vendor peak numbers, dense (NVIDIA's headline "sparse" figures are twice these).
DEVICES: dict[str, DeviceSpec] = {
    # NVIDIA H100 Tensor Core GPU datasheet, SXM5: BF16 1,979 TFLOPS and INT8 3,958 TOPS with sparsity;
    # 3.35 TB/s HBM3, 80 GB.
    "h100": DeviceSpec("h100", "NVIDIA H100 SXM5 80GB", 989.4, 1978.9, 3350.0, 80.0, "H100 datasheet (SXM5), dense = sparse / 2"),
    # NVIDIA H20 (Hopper, export-limited): FP16/BF16 148 TFLOPS, INT8 296 TOPS, 4.0 TB/s HBM3, 96 GB.
    "h20": DeviceSpec("h20", "NVIDIA H20 96GB", 148.0, 296.0, 4000.0, 96.0, "H20 product brief"),
    # NVIDIA A100 Tensor Core GPU datasheet, SXM 80GB: BF16 312 TFLOPS and INT8 624 TOPS dense; 2,039 GB/s HBM2e.
    "a100": DeviceSpec("a100", "NVIDIA A100 SXM 80GB", 312.0, 624.0, 2039.0, 80.0, "A100 datasheet (SXM 80GB)"),
    # NVIDIA Ada Lovelace architecture whitepaper, appendix table for the RTX 4090: FP16/BF16 tensor with FP32
    # accumulate 165.2 TFLOPS dense (330.3 sparse), INT8 tensor 660.6 TOPS dense; 1,008 GB/s GDDR6X, 24 GB.
    "rtx4090": DeviceSpec("rtx4090", "NVIDIA GeForce RTX 4090", 165.2, 660.6, 1008.0, 24.0, "Ada whitepaper, FP32 accumulate"),
    # Jetson AGX Orin Series Technical Brief: 64GB module GPU = 2048 CUDA cores, 64 tensor cores at 1.3 GHz,
    # 170 sparse INT8 TOPS (GPU only; the 275 TOPS headline adds the DLAs) -> 85 dense INT8, 42.5 dense FP16;
    # 256-bit LPDDR5 at 204.8 GB/s, 64 GB shared with the CPU.
    "agx-orin": DeviceSpec("agx-orin", "Jetson AGX Orin 64GB (MAXN)", 42.5, 85.0, 204.8, 64.0, "AGX Orin technical brief, GPU only"),
    # Jetson Orin NX 16GB datasheet: GPU = 1024 CUDA cores, 32 tensor cores at 918 MHz; 128-bit LPDDR5 at
    # 102.4 GB/s, 16 GB shared. NVIDIA gives only the module's 100 sparse TOPS (GPU + DLAs); the GPU share is
    # scaled from the AGX Orin by cores x clock: 170 * (1024/2048) * (918/1300) = 60 sparse -> 30 dense INT8, 15 FP16.
    "orin-nx": DeviceSpec("orin-nx", "Jetson Orin NX 16GB (MAXN)", 15.0, 30.0, 102.4, 16.0, "Orin NX datasheet; GPU TOPS derived"),
}

JETSONS = ("agx-orin", "orin-nx")

# bytes per weight, and whether the arithmetic runs on the INT8 units
PRECISIONS: dict[str, tuple[float, bool]] = {
    "bf16": (2.0, False),
    "int8-wo": (1.0, False),  # weight-only int8: weights stored in int8, dequantised, multiplied in bf16
    "int8": (1.0, True),  # int8 weights and activations (W8A8) on the INT8 tensor cores
}

# Only a fraction of unified memory is usable for weights (OS, CUDA context, activations).
USABLE_MEMORY_FRACTION = 0.85


@dataclass(frozen=True)
class WeightCounts:
    """Parameters read by one forward pass, and parameters that must be resident."""

    read: int
    resident: int


def weight_counts(model: LightVLAForActionPrediction, sequence_length: int) -> WeightCounts:
    """Counts parameters actually used per forward: ViT blocks run (not the last, nor the pooling head), the
    projector, decoder layers, final norm, proprio projector, action head, and the gathered embedding rows."""
    read = 0
    for vit in model.vision_backbone.featurizers:
        skipped = {id(p) for p in vit.blocks[-1].parameters()}
        for name in ("norm", "fc_norm", "attn_pool", "head", "head_drop"):
            module = getattr(vit, name, None)
            if isinstance(module, torch.nn.Module):
                skipped.update(id(p) for p in module.parameters())
        read += sum(p.numel() for p in vit.parameters() if id(p) not in skipped)
    for module in (model.projector, model.llm.layers, model.llm.norm, model.action_head, model.proprio_projector):
        if module is not None:
            read += sum(p.numel() for p in module.parameters())
    read += sequence_length * model.config.llm_dim
    resident = sum(p.numel() for p in model.parameters())
    return WeightCounts(read, resident)


@dataclass(frozen=True)
class Floor:
    device: str
    precision: str
    flops: float
    weight_bytes: float
    compute_ms: float
    weight_read_ms: float
    fits: bool

    @property
    def floor_ms(self) -> float:
        return max(self.compute_ms, self.weight_read_ms)

    @property
    def bound(self) -> str:
        return "compute" if self.compute_ms >= self.weight_read_ms else "memory"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "floor_ms": self.floor_ms, "bound": self.bound}


def floor(device: DeviceSpec, precision: str, flops: float, weights: WeightCounts) -> Floor:
    bytes_per_weight, int8_math = PRECISIONS[precision]
    peak = device.int8_tops if int8_math else device.bf16_tflops
    weight_bytes = weights.read * bytes_per_weight
    return Floor(
        device=device.key,
        precision=precision,
        flops=flops,
        weight_bytes=weight_bytes,
        compute_ms=flops / (peak * 1e12) * 1e3,
        weight_read_ms=weight_bytes / (device.bandwidth_gbs * 1e9) * 1e3,
        fits=weights.resident * bytes_per_weight <= USABLE_MEMORY_FRACTION * device.memory_gb * 1e9,
    )


def detect_device(name: str) -> str | None:
    """The table key of a CUDA device name (``torch.cuda.get_device_name``), if it is one we list."""
    lowered = name.lower()
    for needle, key in (("h100", "h100"), ("h200", None), ("h20", "h20"), ("a100", "a100"), ("4090", "rtx4090"),
                        ("agx orin", "agx-orin"), ("orin nx", "orin-nx")):
        if needle in lowered:
            return key
    return None

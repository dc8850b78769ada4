"""Roofline arithmetic and weight counting."""

from __future__ import annotations

import pytest
import torch

from benchmarks.report import roofline
from benchmarks.roofline import DEVICES, WeightCounts, detect_device, floor, weight_counts
from lightvla_ros.model.modeling import LightVLAForActionPrediction
from lightvla_ros.model.presets import openvla_oft_7b_config


def test_floors_are_flops_over_peak_and_bytes_over_bandwidth():
    h100 = DEVICES["h100"]
    weights = WeightCounts(read=7_000_000_000, resident=7_600_000_000)
    f = floor(h100, "bf16", 3e12, weights)
    assert f.compute_ms == pytest.approx(3e12 / 989.4e12 * 1e3)
    assert f.weight_read_ms == pytest.approx(14e9 / 3350e9 * 1e3)
    assert f.floor_ms == max(f.compute_ms, f.weight_read_ms) and f.bound == "memory" and f.fits
    wo = floor(h100, "int8-wo", 3e12, weights)
    assert wo.weight_read_ms == pytest.approx(f.weight_read_ms / 2) and wo.compute_ms == f.compute_ms
    w8a8 = floor(h100, "int8", 3e12, weights)
    assert w8a8.compute_ms == pytest.approx(f.compute_ms / 2, rel=1e-3)


def test_memory_fit_uses_resident_weights():
    nx = DEVICES["orin-nx"]
    weights = WeightCounts(read=7_400_000_000, resident=7_600_000_000)
    assert not floor(nx, "bf16", 1e12, weights).fits  # 15.2 GB of bf16 weights in 16 GB shared memory
    assert floor(nx, "int8-wo", 1e12, weights).fits


def test_weight_counts_of_the_7b_skip_unused_blocks():
    with torch.device("meta"):
        model = LightVLAForActionPrediction(openvla_oft_7b_config())
    counts = weight_counts(model, 175)
    unused = sum(p.numel() for vit in model.vision_backbone.featurizers for p in vit.blocks[-1].parameters())
    assert counts.resident == sum(p.numel() for p in model.parameters())
    assert counts.read < counts.resident - unused - model.llm.embed_tokens.weight.numel() + 175 * 4096 + 1
    assert 7.2e9 < counts.read < 7.5e9


@pytest.mark.parametrize("name, key", [("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H200", None), ("NVIDIA H20", "h20"),
                                       ("NVIDIA GeForce RTX 4090", "rtx4090"), ("NVIDIA A100-SXM4-80GB", "a100"),
                                       ("Tesla T4", None)])
def test_device_names_map_to_table_keys(name, key):
    assert detect_device(name) == key


def test_roofline_table_marks_measured_numbers_and_summarises_jetsons():
    table = roofline(34, {"k78": 9.5}, "h100")
    measured = [r for r in table["rows"] if "measured_ms" in r]
    assert len(measured) == 1 and measured[0]["device"] == "h100" and measured[0]["scenario"] == "k78"
    assert {r["precision"] for r in table["rows"] if r["device"] == "h20"} == {"bf16"}
    assert {r["precision"] for r in table["rows"] if r["device"] == "agx-orin"} == {"bf16", "int8-wo", "int8"}
    for summary in table["jetson"].values():
        assert summary["bf16_pruned_ms"] < summary["bf16_unpruned_ms"]
        assert summary["pruning_speedup_bf16"] == pytest.approx(summary["bf16_unpruned_ms"] / summary["bf16_pruned_ms"])

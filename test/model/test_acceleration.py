"""Inference speed-ups that must leave results unchanged: kept-token buckets, torch.compile, the heap allocator."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch

from lightvla_ros.model.acceleration import DEFAULT_BUCKETS, Acceleration, accelerate
from lightvla_ros.model.allocator import set_allocator
from lightvla_ros.model.configuration import PruningConfig
from lightvla_ros.model.errors import InputError
from lightvla_ros.model.presets import random_model, tiny_config


def _inputs(config, batch=2):
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(batch, 12, 224, 224, generator=generator)
    ids = torch.randint(4, 400, (batch, 12 + config.num_action_slots + 1), generator=generator)
    return pixels, ids, torch.full((batch,), ids.shape[1]), torch.randn(batch, 8, generator=generator)


def test_buckets_default_to_cuda_graph_sizes_only_for_reduce_overhead():
    assert Acceleration.for_mode("reduce-overhead").buckets == DEFAULT_BUCKETS
    assert Acceleration.for_mode("default").buckets == () and Acceleration.for_mode("none").buckets == ()
    assert Acceleration.for_mode("none", (40, 20)).buckets == (40, 20)
    with pytest.raises(InputError, match="compile mode"):
        Acceleration("fast")


@pytest.mark.parametrize("method", ["lightvla", "none"])
def test_bucketed_and_compiled_model_gives_the_same_actions(method):
    config = tiny_config(448, 5, hidden=32, layers=2)
    plain = random_model(config, PruningConfig(method)).eval()
    fast = random_model(config, PruningConfig(method)).eval()
    accelerate(fast, Acceleration("default", (8, 64, 512), backend="eager"))
    inputs = _inputs(config)
    with torch.no_grad():
        expected, out = plain(*inputs), fast(*inputs)
    for a, b in zip(expected.kept_patch_indices, out.kept_patch_indices):
        assert torch.equal(a, b)
    torch.testing.assert_close(out.normalized_actions, expected.normalized_actions, atol=1e-5, rtol=1e-4)


def test_heap_allocator_switch_applies_on_glibc():
    """Run in a child process: the switch is process-wide."""
    code = "from lightvla_ros.model.allocator import set_allocator; print(set_allocator('heap'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()
    assert out == ("True" if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc" else "False")


def test_unknown_allocator_is_refused():
    assert set_allocator("default")
    with pytest.raises(InputError, match="allocator"):
        set_allocator("jemalloc")

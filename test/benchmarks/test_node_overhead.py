"""The node-overhead analysis on synthetic chunk records (the ROS run itself is a benchmark, not a test)."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.commands import add_arguments
from benchmarks.node_overhead import Chunk, Phase, analyse, node_markdown


def chunk(stamp: float, publish: float, model: float) -> Chunk:
    return Chunk(camera_stamps=[stamp - 0.004, stamp], publish=publish, model_s=model, received=publish + 0.001)


def test_overhead_splits_into_wait_for_the_worker_and_node_work():
    # frames every 1/30 s, inference 50 ms, node work 2 ms, transport 1 ms
    chunks, free = [], 0.0
    for i in range(20):
        stamp = i * (2 / 30)
        start = max(stamp + 0.001, free)
        free = start + 0.050 + 0.002
        chunks.append(chunk(stamp, free, 0.050))
    result = analyse(Phase(chunks=chunks, frames_sent=40, counters_before={"camera 0 received": 5},
                           counters_after={"camera 0 received": 45}), transport_s=0.001)
    assert result["chunks"] == 20
    assert result["node_work_ms"]["median"] == pytest.approx(2.0, abs=1e-6)
    assert result["overhead_ms"]["median"] == pytest.approx(result["wait_ms"]["median"] + 2.0, abs=1e-6)
    assert result["model_ms"]["median"] == pytest.approx(50.0)
    assert abs(result["latency_trend_ms_per_s"]) < 1.0
    assert result["camera_counters"] == {"camera 0 received": 40}


def test_growing_latency_shows_as_a_positive_trend():
    chunks = [chunk(i * 0.1, i * 0.1 + 0.06 + 0.01 * i, 0.05) for i in range(30)]
    result = analyse(Phase(chunks=chunks), transport_s=0.0)
    assert result["latency_trend_ms_per_s"] == pytest.approx(10 / 0.11, rel=1e-6)  # +10 ms per chunk, one per 0.11 s
    assert result["latency_second_half_median_ms"] > result["latency_first_half_median_ms"]


def test_markdown_reports_both_phases_and_frame_accounting():
    chunks = [chunk(i * 0.1, i * 0.1 + 0.06, 0.05) for i in range(5)]
    phase = analyse(Phase(chunks=chunks, frames_sent=10, counters_after={"camera 0 received": 10, "camera 0 dropped": 3}), 0.001)
    result = {"run": {"camera_shape": [480, 640], "rate_hz": 30.0, "seconds": 1.0, "node_cpu_threads": 1, "dds": "default",
                      "checkpoint": "tiny", "load_average": [0.1, 0.1, 0.1]},
              "machine": {"cpu": "cpu", "cpu_count": 2, "torch": "2"}, "transport_ms": None,
              "streaming": phase, "idle": analyse(Phase(), 0.0)}
    text = node_markdown(result)
    assert "640x480" in text and "| streaming 1 s | 5 |" in text and "| idle node" in text
    assert "dropped (replaced before use) 3" in text


def test_node_options_parse():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--node", "--node-seconds", "5", "--node-dds", "large-shm", "--camera", "320x240"])
    assert args.node and args.node_seconds == 5 and args.node_dds == "large-shm" and args.camera == (240, 320)
    assert args.node_domain is None

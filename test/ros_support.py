"""Shared helpers for the ROS tests: isolation, fixtures, a fake policy and message builders."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_NAME = 'oft-tiny-libero'


def isolate_ros_environment() -> int:
    """Give this test run a private ROS domain on loopback; returns the domain id (children inherit it).

    ``LIGHTVLA_TEST_DOMAIN_ID`` chooses it; by default it is derived from the pid, so concurrent runs do not meet.
    """
    from lightvla_ros.ros.core.domain import isolate_ros_domain, private_domain_id

    return isolate_ros_domain(int(os.environ.get('LIGHTVLA_TEST_DOMAIN_ID', private_domain_id())))


def tiny_checkpoint() -> Path | None:
    """The tiny fixture checkpoint: $LIGHTVLA_FIXTURES/oft-tiny-libero or ../shared/fixtures."""
    base = os.environ.get('LIGHTVLA_FIXTURES')
    root = Path(base) if base else REPO_ROOT.parent / 'shared' / 'fixtures'
    path = root / TINY_NAME
    return path if (path / 'config.json').is_file() else None


def stop_process(proc: Any, timeout: float = 15.0) -> None:
    """SIGINT (a node's normal Ctrl-C shutdown path), then SIGKILL if it has not exited within ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def spin_until(executor: Any, predicate: Callable[[], bool], timeout: float) -> bool:
    """The package's spin loop (imported here lazily: collecting a test must not need rclpy)."""
    from lightvla_ros.ros.entry import spin_until as spin

    return spin(executor, predicate, timeout)


def rgb_image(height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    """A deterministic random RGB frame."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def image_msg(rgb: np.ndarray, stamp: Any, encoding: str = 'rgb8') -> Any:
    """A sensor_msgs/Image of ``rgb`` converted to ``encoding`` (rgb8, bgr8, rgba8, mono8)."""
    from sensor_msgs.msg import Image

    if encoding == 'bgr8':
        pixels = rgb[:, :, ::-1]
    elif encoding == 'rgba8':
        pixels = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    elif encoding == 'mono8':
        pixels = rgb[:, :, :1]
    else:
        pixels = rgb
    pixels = np.ascontiguousarray(pixels)
    msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                step=pixels.shape[1] * pixels.shape[2], data=pixels.tobytes())
    msg.header.stamp = stamp
    msg.header.frame_id = 'camera'
    return msg


def info_values(status: Any) -> dict[str, str]:
    """The key/value pairs of a DiagnosticStatus as a dict."""
    return {kv.key: kv.value for kv in status.values}


@dataclass
class FakeOutput:
    """Stands in for lightvla_ros.policy.PolicyOutput."""

    actions: np.ndarray
    normalized_actions: np.ndarray
    kept_patch_indices: np.ndarray
    num_kept: int
    num_patches: int
    patches_per_image: int = 256
    grid_size: int = 16
    keep_ratio: float = 0.0
    flops: dict = field(default_factory=dict)
    timings_ms: dict = field(default_factory=dict)


class FakePolicy:
    """A deterministic policy with the real one's interface; can block to test epoch discards."""

    num_images = 2
    use_proprio = True
    proprio_dim = 8
    chunk_len = 8
    action_dim = 7
    device = 'cpu'
    device_name = 'fake-cpu'
    dtype = 'float32'
    patches_per_image = 256

    def __init__(self) -> None:
        self.pruning = 'lightvla'
        self.max_kept_tokens: int | None = None
        self.calls: list[tuple[str, Any]] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.next_actions: np.ndarray | None = None
        self.scale = 0.1
        self.released = False

    def check_pruning(self, method: str, max_kept_tokens: int | None) -> str:
        return '' if method in ('lightvla', 'none') else f'pruning {method!r} is not supported by this checkpoint'

    def set_pruning(self, method: str, max_kept_tokens: int | None) -> None:
        if self.check_pruning(method, max_kept_tokens):
            raise ValueError(self.check_pruning(method, max_kept_tokens))
        self.pruning, self.max_kept_tokens = method, max_kept_tokens

    def release(self) -> None:
        self.released = True

    def warmup(self) -> None:
        return None

    def predict(self, images: list[np.ndarray], instruction: str,
                proprio: np.ndarray | None = None) -> FakeOutput:
        self.calls.append((instruction, None if proprio is None else proprio.copy()))
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10.0)
        if self.next_actions is not None:
            actions = self.next_actions
        else:
            actions = np.tile(np.arange(self.chunk_len, dtype=np.float32)[:, None],
                              (1, self.action_dim)) * self.scale
        total = self.num_images * self.patches_per_image
        kept = total if self.pruning == 'none' else min(total // 4, self.max_kept_tokens or total)
        indices = np.arange(0, total, total // kept, dtype=np.int64)[:kept]
        return FakeOutput(actions=actions.astype(np.float32), normalized_actions=actions,
                          kept_patch_indices=indices,
                          num_kept=kept, num_patches=total, keep_ratio=kept / total,
                          flops={'total': 1e9, 'unpruned_total': 2e9, 'saved_fraction': 0.5},
                          timings_ms={'total': 1.0})

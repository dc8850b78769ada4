"""What happens to a chunk the model computed: checks, clipping, publishing and hand-over to the actuator.

Every finite chunk is published on ``action_chunk`` / ``chunk_info`` with its observation stamp, so consumers can
judge it; the actuator's scheduler executes the steps whose time has not passed yet (all of them in open_loop). A chunk
with none left is counted as too late to execute and reported, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from std_msgs.msg import Float32

from lightvla_ros.contract import PolicyOutput
from lightvla_ros.ros import messages
from lightvla_ros.ros.actuation import Actuator
from lightvla_ros.ros.core import chunks as chunk_math
from lightvla_ros.ros.core.frames import Frame, FrameSet
from lightvla_ros.ros.core.params import NodeConfig
from lightvla_ros.ros.diagnostics import NodeHealth
from lightvla_ros.ros.endpoints import Endpoints


@dataclass(frozen=True)
class Inference:
    """One finished prediction and what it was computed from."""

    output: PolicyOutput
    frameset: FrameSet
    images: list[np.ndarray]
    instruction: str
    epoch: int
    latency_s: float


def _frame_stamp(frame: Frame) -> str:
    return messages.stamp_text(frame.msg.header.stamp) if frame.stamped else f'{frame.stamp:.9f}'


class ChunkPublisher:
    """The node's output stage (called from the inference worker)."""

    def __init__(self, node_name: str, endpoints: Endpoints, actuator: Actuator, health: NodeHealth,
                 config: Callable[[], NodeConfig], now: Callable[[], float], stamp_now: Callable[[], Any],
                 logger: Any) -> None:
        self._node_name = node_name
        self._endpoints = endpoints
        self._actuator = actuator
        self._health = health
        self._config = config
        self._now = now
        self._stamp_now = stamp_now
        self._log = logger
        self._chunk_id = 0

    def reject_nonfinite(self, now: float) -> None:
        counters = self._health.actions
        counters.rejected_nonfinite += 1
        counters.nonfinite_since_last_good, counters.last_nonfinite_at = True, now
        self._log.error('model produced a non-finite action chunk; not published', throttle_duration_sec=5.0)

    def publish(self, result: Inference) -> None:
        """Publish every computed chunk; execute only the steps whose time has not passed yet."""
        cfg, health, now, output = self._config(), self._health, self._now(), result.output
        health.record_inference(output, result.latency_s, now)
        actions = np.asarray(output.actions, dtype=np.float32)
        counters = health.actions
        if actions.ndim != 2 or not chunk_math.all_finite(actions):
            self.reject_nonfinite(now)
            return
        clip = chunk_math.clip_actions(actions, list(cfg.action_lower), list(cfg.action_upper))
        obs = result.frameset.obs_stamp
        remaining = self._actuator.executable_steps(len(actions), obs, now)
        trimmed = len(actions) - remaining
        counters.trimmed_steps_last, counters.nonfinite_since_last_good = trimmed, False
        if clip.clipped_elements:
            counters.clipped_chunks += 1
            counters.clipped_elements += clip.clipped_elements
        self._chunk_id += 1
        stamp = self._stamp_now()
        endpoints = self._endpoints
        endpoints.chunk.publish(messages.chunk_msg(clip.actions))
        endpoints.chunk_info.publish(self._chunk_info(result, cfg, trimmed, remaining, clip.clipped_elements, stamp,
                                                      messages.chunk_checksum(clip.actions)))
        endpoints.keep_ratio.publish(Float32(data=float(output.keep_ratio)))
        counters.published += 1
        counters.last_published_at = now
        if remaining:
            counters.last_fresh_at = now
            self._actuator.execute(clip.actions, obs, stamp)
        else:
            counters.stale += 1
            counters.last_stale_at = now
            self._log.warning(
                f'chunk {self._chunk_id} too late to execute: {now - obs:.3f} s after the '
                f'observation all {len(actions)} steps of {cfg.dt} s have elapsed; published on action_chunk, not '
                'executed', throttle_duration_sec=5.0)
        if cfg.debug_image and endpoints.debug_image.get_subscription_count() > 0:
            endpoints.debug_image.publish(messages.debug_image_msg(
                output, result.images, result.frameset.frames[0].msg.header, cfg.center_crop))

    def _chunk_info(self, result: Inference, cfg: NodeConfig, trimmed: int, remaining: int, clipped: int,
                    stamp: Any, checksum: str) -> Any:
        output, frames = result.output, result.frameset.frames
        values = {
            'chunk_id': str(self._chunk_id), 'instruction': result.instruction,
            'instruction_epoch': str(result.epoch), 'obs_stamp': _frame_stamp(min(frames, key=lambda f: f.stamp)),
            'camera_stamps': ' '.join(_frame_stamp(f) for f in frames),
            'camera_spread_ms': f'{result.frameset.spread * 1000:.3f}', 'publish_stamp': messages.stamp_text(stamp),
            'latency_ms': f'{result.latency_s * 1000:.3f}', 'steps': str(int(output.actions.shape[0])),
            'dims': str(int(output.actions.shape[1])), 'chunk_crc32': checksum, 'dt': repr(cfg.dt),
            'trimmed_steps': str(trimmed),
            'remaining_steps': str(remaining), 'executable': str(remaining > 0), 'clipped_elements': str(clipped),
            'kept_tokens': str(int(output.num_kept)), 'total_tokens': str(int(output.num_patches)),
            'keep_ratio': f'{float(output.keep_ratio):.6f}',
            'flops_saved_fraction': f"{float(output.flops.get('saved_fraction', 0.0)):.6f}",
            'pruning': self._health.pruning.method, 'actuation': str(cfg.publish_actions),
        }
        return messages.chunk_info_msg(f'{self._node_name}: chunk {self._chunk_id}',
                                       f'chunk {self._chunk_id} for "{result.instruction}"',
                                       str(self._health.model.device), values)

"""The node's configuration: one typed, frozen :class:`NodeConfig` whose fields are the declared parameters.

Each field carries its description, range, choices and whether it can change at run time, so the parameter
table the node declares (:data:`PARAMS`), the typed object the node reads (``config.max_kept_tokens``) and the
YAML file the tests compare against all come from this one definition. Kept ROS-free so it is testable anywhere.
Defaults are the LIBERO setup (two cameras, EEF deltas at 20 Hz).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Mapping

from lightvla_ros.contract import PolicySettings
from lightvla_ros.model.configuration import (
    ALLOCATORS,
    COMPILE_BACKENDS,
    COMPILE_MODES,
    DTYPE_CHOICES,
    PREPROCESSING_CHOICES,
    PRUNING_METHODS,
    QUANTIZE_MODES,
    READOUT_MODES,
    SDPA_BACKENDS,
)
from lightvla_ros.ros.core.scheduler import AGGREGATION_OLD_WEIGHT, EXECUTION_MODES

ParamValue = bool | int | float | str | list

ACTION_SPACES = ('eef_delta', 'joint')
CAMERA_TYPES = ('raw', 'compressed')
STATE_SOURCES = ('none', 'joint_states', 'float32_array')
MISSING_STATE_POLICIES = ('zeros', 'wait')


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter. ``element`` names the element type of list parameters."""

    name: str
    default: ParamValue
    description: str
    read_only: bool = True
    choices: tuple[str, ...] = ()
    min_value: float | None = None
    max_value: float | None = None
    element: str = ''


def _param(default: Any, description: str, *, runtime: bool = False, choices: tuple[str, ...] = (),
           min_value: float | None = None, max_value: float | None = None, element: str = '') -> Any:
    """A NodeConfig field that is also a declared parameter (``runtime``: changeable while the node runs)."""
    spec = {'description': description, 'read_only': not runtime, 'choices': choices,
            'min_value': min_value, 'max_value': max_value, 'element': element}
    return dataclasses.field(default=default, metadata={'param': spec})


@dataclass(frozen=True)
class NodeConfig:
    """Every parameter of ``lightvla_node`` with its type and default (lists are tuples here)."""

    # --- lifecycle
    autostart: bool = _param(True, 'Configure and activate by itself at start (off: wait for a lifecycle manager or '
                                   '`ros2 lifecycle set <node> configure`).')
    # --- model
    checkpoint: str = _param('', 'Folder of the LightVLA / OpenVLA-OFT checkpoint (release layout).')
    device: str = _param('auto', 'Torch device: auto, cpu, cuda or cuda:N.')
    dtype: str = _param('auto', 'Weights dtype (auto: bfloat16 on CUDA, float32 on CPU).', choices=DTYPE_CHOICES)
    unnorm_key: str = _param('', 'Key into dataset_statistics.json for un-normalising actions (empty: the only key '
                                 'in the file).')
    center_crop: bool = _param(True, 'Apply the 90%-area centre crop used when training on LIBERO.')
    preprocessing: str = _param('auto', 'How frames reach the model: oft (the authors\' LIBERO evaluation chain: JPEG '
                                        'round trip, Lanczos resize, their centre crop), plain (frames as they are, as '
                                        '`lightvla train` trains) or auto (oft with center_crop, plain without).',
                                choices=PREPROCESSING_CHOICES)
    readout: str = _param('last', 'Action-head readout positions: last (released checkpoints) or aligned.',
                          choices=READOUT_MODES)
    cpu_threads: int = _param(0, 'Torch intra-op threads for CPU inference (0: torch default). Use 1 or 2 when other '
                                 'processes share the CPU: oversubscribed threads can make inference many times '
                                 'slower.', min_value=0, max_value=256)
    warmup: bool = _param(True, 'Run dummy forward passes after loading so the first real chunk is not slow (with '
                                'kept_token_buckets: one per bucket).')
    quantize: str = _param('none', 'Weight-only quantization of the LLM and projector at load: none, int8, int4-gN '
                                   '(4-bit, one scale per N weights; int4 = int4-g128) or fp8 (GPUs with fp8 only). '
                                   'See docs/performance.md for the measured accuracy.', choices=QUANTIZE_MODES)
    compile_mode: str = _param('none', 'torch.compile the model at configure: none, default, reduce-overhead (CUDA '
                                       'graphs over kept_token_buckets) or max-autotune.', choices=COMPILE_MODES)
    compile_backend: str = _param('inductor', 'torch.compile backend: inductor (generates kernels), eager or '
                                              'aot_eager (trace only: checks, not speed).', choices=COMPILE_BACKENDS)
    kept_token_buckets: tuple[int, ...] = _param((), 'Pad the kept visual tokens up to the next of these counts '
                                                     '(static shapes for compiled graphs; results unchanged). Empty: '
                                                     'none, or the CUDA-graph default with compile_mode '
                                                     'reduce-overhead.', element='integer')
    sdpa_backend: str = _param('auto', 'Attention kernel: auto (torch picks), math, flash, efficient or cudnn (the '
                                       'last two on CUDA only).', choices=SDPA_BACKENDS)
    allocator: str = _param('default', 'Memory allocator: default, or heap (keep freed activations in glibc\'s '
                                       'heap: faster CPU inference, same results).', choices=ALLOCATORS)
    pruning: str = _param('lightvla', 'Visual-token pruning: lightvla, lightvla_star (checkpoints with learnable '
                                      'queries) or none. Changeable at run time.', runtime=True,
                          choices=PRUNING_METHODS)
    max_kept_tokens: int = _param(0, 'Upper bound on kept visual tokens (0: no cap). Changeable at run time.',
                                  runtime=True, min_value=0, max_value=65536)
    # --- inputs
    camera_topics: tuple[str, ...] = _param(('camera/image_raw', 'wrist_camera/image_raw'),
                                            'Camera topics in model order: third-person camera first, then the '
                                            'wrist camera.', element='string')
    camera_types: tuple[str, ...] = _param(('raw', 'raw'), 'Per camera topic: raw (sensor_msgs/Image) or compressed '
                                                           '(sensor_msgs/CompressedImage).',
                                           choices=CAMERA_TYPES, element='string')
    sync_tolerance: float = _param(0.1, 'Largest stamp difference (s) between the frames of one observation, and '
                                        'how much older than its oldest frame the state may be (an older one: wait '
                                        'for a newer state); also how far ahead of the node clock a camera stamp '
                                        'may be before it is reported as clock skew.', runtime=True, min_value=0.0,
                                   max_value=10.0)
    max_image_age: float = _param(1.0, 'Frames older than this (s, node clock minus header stamp) are never used.',
                                  runtime=True, min_value=0.01, max_value=3600.0)
    camera_timeout: float = _param(2.0, 'A camera silent for longer than this (s) is reported as WARN.', runtime=True,
                                   min_value=0.1, max_value=3600.0)
    instruction_topic: str = _param('instruction', 'Topic of the std_msgs/String instruction (reliable, volatile, '
                                                   'depth 10).')
    max_instruction_chars: int = _param(512, 'Longer instructions are rejected (the node goes idle).', min_value=1,
                                        max_value=100000)
    stop_words: tuple[str, ...] = _param(('stop',), 'Instructions meaning "stop and go idle", like the empty string.',
                                         element='string')
    instruction_timeout: float = _param(0.0, 'Go idle when the instruction was not (re)published for this long (s); '
                                             '0 keeps it forever.', runtime=True, min_value=0.0, max_value=86400.0)
    state_source: str = _param('float32_array', 'Where the proprio state comes from: none, joint_states '
                                                '(sensor_msgs/JointState) or float32_array '
                                                '(std_msgs/Float32MultiArray).', choices=STATE_SOURCES)
    state_topic: str = _param('state', 'Topic of the state messages.')
    state_joint_names: tuple[str, ...] = _param((), 'JointState names in model state order (empty: message order).',
                                                element='string')
    state_indices: tuple[int, ...] = _param((), 'Float32MultiArray elements in model state order (empty: all).',
                                            element='integer')
    missing_state: str = _param('zeros', 'When the model needs a state and no valid one is younger than '
                                         'max_state_age: zeros (infer with a zero vector, reported as WARN) or wait '
                                         '(no inference).', runtime=True, choices=MISSING_STATE_POLICIES)
    max_state_age: float = _param(1.0, 'A state older than this (s, node clock minus its stamp) counts as missing '
                                       '(missing_state applies).', runtime=True, min_value=0.01, max_value=3600.0)
    # --- outputs
    action_space: str = _param('eef_delta', 'eef_delta (xyz, rotation vector, gripper: streamed as TwistStamped + '
                                            'Path) or joint (JointTrajectory).', choices=ACTION_SPACES)
    joint_names: tuple[str, ...] = _param((), 'Joint names of the first action dimensions (action_space joint).',
                                          element='string')
    gripper_index: int = _param(6, 'Action dimension published on the gripper topic (-1: none).', min_value=-1,
                                max_value=63)
    dt: float = _param(0.05, 'Control period (s) of one chunk step; must match the training data (LIBERO: 0.05).',
                       min_value=0.001, max_value=10.0)
    execution_mode: str = _param('replace', 'How chunks are executed: replace (infer on each fresh observation, a new '
                                            'chunk replaces the rest of the old), open_loop (every step of a chunk, '
                                            'then the next inference: the authors\' LIBERO protocol), async (ask for '
                                            'the next chunk at async_threshold x chunk length, blend the overlap) or '
                                            'temporal_ensemble (ACT: average every prediction for a step).',
                                 runtime=True, choices=EXECUTION_MODES)
    async_threshold: float = _param(0.5, 'async: ask for the next chunk once at most this fraction of a chunk is '
                                         'queued.', runtime=True, min_value=0.0, max_value=1.0)
    async_aggregation: str = _param('weighted_average', 'async: how a new chunk\'s step is blended into a queued one: '
                                                        'latest_only, weighted_average (0.3 old / 0.7 new), average, '
                                                        'conservative (0.7 old / 0.3 new).', runtime=True,
                                    choices=tuple(AGGREGATION_OLD_WEIGHT))
    ensemble_decay: float = _param(0.01, 'temporal_ensemble: prediction i (0 = the oldest) of a step weighs '
                                         'exp(-ensemble_decay x i).', runtime=True, min_value=0.0, max_value=10.0)
    action_lower: tuple[float, ...] = _param((-1.0,) * 7, 'Per-dimension lower action limits (empty: no clipping).',
                                             element='double')
    action_upper: tuple[float, ...] = _param((1.0,) * 7, 'Per-dimension upper action limits (empty: no clipping).',
                                             element='double')
    linear_scale: float = _param(0.05, 'Metres per unit of an EEF translation delta (robosuite OSC default 0.05).',
                                 min_value=0.0, max_value=100.0)
    angular_scale: float = _param(0.5, 'Radians per unit of an EEF rotation delta (robosuite OSC default 0.5).',
                                  min_value=0.0, max_value=100.0)
    frame_id: str = _param('base_link', 'Frame of ee_twist commands and of the ee_path poses.')
    publish_actions: bool = _param(False, 'Safety gate: publish on the actuation topics (joint_trajectory, ee_twist, '
                                          'gripper). Off by default; the ~/enable service sets it too.', runtime=True)
    debug_image: bool = _param(True, 'Render ~/debug_image (only while it has subscribers).', runtime=True)
    latency_budget: float = _param(0.0, 'Latency (s) above which inference is reported as WARN (0: chunk length x '
                                        'dt).', runtime=True, min_value=0.0, max_value=3600.0)
    inference_period: float = _param(0.0, 'Minimum time (s) between inference starts (0: as fast as fresh frames '
                                          'arrive).', runtime=True, min_value=0.0, max_value=3600.0)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> 'NodeConfig':
        """A config from parameter values (unknown names are ignored, missing ones keep their defaults)."""
        return cls(**_typed(values))

    def updated(self, values: Mapping[str, Any]) -> 'NodeConfig':
        """A copy with some parameters changed (the run-time changes ``ros2 param set`` makes)."""
        return dataclasses.replace(self, **_typed(values))

    @property
    def camera_kinds(self) -> tuple[str, ...]:
        """raw/compressed per camera topic (camera_types may be left empty: all raw)."""
        return self.camera_types or ('raw',) * len(self.camera_topics)

    @property
    def num_cameras(self) -> int:
        return len(self.camera_topics)

    def policy_settings(self) -> PolicySettings:
        """What the policy loader needs, typed."""
        return PolicySettings(
            checkpoint=self.checkpoint, device=self.device, dtype=self.dtype, pruning=self.pruning,
            max_kept_tokens=self.max_kept_tokens or None, unnorm_key=self.unnorm_key or None,
            center_crop=self.center_crop, preprocessing=self.preprocessing, readout=self.readout,
            num_images=self.num_cameras,
            cpu_threads=self.cpu_threads, quantize=self.quantize, compile_mode=self.compile_mode,
            compile_backend=self.compile_backend, kept_token_buckets=self.kept_token_buckets,
            sdpa_backend=self.sdpa_backend, allocator=self.allocator)

    def problem(self) -> str:
        """Why this configuration cannot work, or '' (checked at configure, before loading)."""
        for spec in PARAMS:
            reason = validate_value(spec, getattr(self, spec.name))
            if reason:
                return 'invalid parameter ' + reason
        if not self.checkpoint:
            return 'no checkpoint configured: set the checkpoint parameter (launch argument checkpoint:=/path/to/folder)'
        if not self.camera_topics:
            return 'camera_topics is empty'
        if self.camera_types and len(self.camera_types) != len(self.camera_topics):
            return f'camera_types has {len(self.camera_types)} entries but camera_topics has {len(self.camera_topics)}'
        if self.action_space == 'joint' and not self.joint_names:
            return 'action_space joint needs joint_names'
        if len(self.action_lower) != len(self.action_upper):
            return 'action_lower and action_upper must have the same length'
        if not os.path.isdir(self.checkpoint):
            return f"checkpoint folder '{self.checkpoint}' does not exist"
        return ''


def _typed(values: Mapping[str, Any]) -> dict[str, Any]:
    """Parameter values as NodeConfig field values: known names only, lists as tuples."""
    return {name: tuple(value) if isinstance(value, (list, tuple)) else value
            for name, value in values.items() if name in SPECS}


def _spec(f: dataclasses.Field) -> ParamSpec:
    default = list(f.default) if isinstance(f.default, tuple) else f.default
    return ParamSpec(name=f.name, default=default, **f.metadata['param'])


PARAMS: tuple[ParamSpec, ...] = tuple(_spec(f) for f in dataclasses.fields(NodeConfig))
SPECS: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMS}


def validate_value(spec: ParamSpec, value: Any) -> str:
    """Return why ``value`` is not allowed for ``spec`` (ranges are also enforced by rclpy)."""
    if spec.choices:
        items = value if isinstance(value, (list, tuple)) else [value]
        bad = [item for item in items if item not in spec.choices]
        if bad:
            return f'{spec.name}: {bad} not in {list(spec.choices)}'
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if spec.min_value is not None and value < spec.min_value:
            return f'{spec.name}: {value} < {spec.min_value}'
        if spec.max_value is not None and value > spec.max_value:
            return f'{spec.name}: {value} > {spec.max_value}'
    return ''

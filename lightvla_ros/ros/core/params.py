"""The node's parameter table: names, defaults, descriptions, ranges and choices.

Kept ROS-free so tests can compare it with ``config/lightvla.yaml`` and the node can turn each
entry into a ``ParameterDescriptor``. Defaults are the LIBERO setup (two cameras, EEF deltas at
20 Hz).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ParamValue = bool | int | float | str | list


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter. ``element`` names the element type of list parameters."""

    name: str
    default: ParamValue
    description: str
    read_only: bool = True
    choices: tuple[str, ...] = ()
    min_value: float | None = None
    max_value: float | None = None
    element: str = ''


PRUNING_METHODS = ('lightvla', 'lightvla_star', 'none')

PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec('checkpoint', '', 'Folder of the LightVLA / OpenVLA-OFT checkpoint (release '
              'layout).'),
    ParamSpec('device', 'auto', 'Torch device: auto, cpu, cuda or cuda:N.'),
    ParamSpec('dtype', 'auto', 'Weights dtype (auto: bfloat16 on CUDA, float32 on CPU).',
              choices=('auto', 'bfloat16', 'float16', 'float32')),
    ParamSpec('unnorm_key', '', 'Key into dataset_statistics.json for un-normalising actions '
              '(empty: the only key in the file).'),
    ParamSpec('center_crop', True, 'Apply the 90%-area centre crop used when training on LIBERO.'),
    ParamSpec('readout', 'last', 'Action-head readout positions: last (released checkpoints) or '
              'aligned.', choices=('last', 'aligned')),
    ParamSpec('cpu_threads', 0, 'Torch intra-op threads for CPU inference (0: torch default). '
              'Use 1 or 2 when other processes share the CPU: oversubscribed threads can make '
              'inference many times slower.', min_value=0, max_value=256),
    ParamSpec('warmup', True, 'Run dummy forward passes after loading so the first real chunk is '
              'not slow.'),
    ParamSpec('pruning', 'lightvla', 'Visual-token pruning: lightvla, lightvla_star (checkpoints '
              'with learnable queries) or none. Changeable at run time.', read_only=False,
              choices=PRUNING_METHODS),
    ParamSpec('max_kept_tokens', 0, 'Upper bound on kept visual tokens (0: no cap). Changeable at '
              'run time.', read_only=False, min_value=0, max_value=65536),
    ParamSpec('camera_topics', ['camera/image_raw', 'wrist_camera/image_raw'],
              'Camera topics in model order: third-person camera first, then the wrist camera.',
              element='string'),
    ParamSpec('camera_types', ['raw', 'raw'], 'Per camera topic: raw (sensor_msgs/Image) or '
              'compressed (sensor_msgs/CompressedImage).', choices=('raw', 'compressed'),
              element='string'),
    ParamSpec('sync_tolerance', 0.1, 'Largest stamp difference (s) between the frames of one '
              'observation.', read_only=False, min_value=0.0, max_value=10.0),
    ParamSpec('max_image_age', 1.0, 'Frames older than this (s, node clock minus header stamp) '
              'are never used.', read_only=False, min_value=0.01, max_value=3600.0),
    ParamSpec('camera_timeout', 2.0, 'A camera silent for longer than this (s) is reported as '
              'WARN.', read_only=False, min_value=0.1, max_value=3600.0),
    ParamSpec('instruction_topic', 'instruction', 'Topic of the std_msgs/String instruction '
              '(reliable, volatile, depth 10).'),
    ParamSpec('max_instruction_chars', 512, 'Longer instructions are rejected (the node goes '
              'idle).', min_value=1, max_value=100000),
    ParamSpec('stop_words', ['stop'], 'Instructions meaning "stop and go idle", like the empty '
              'string.', element='string'),
    ParamSpec('instruction_timeout', 0.0, 'Go idle when the instruction was not (re)published '
              'for this long (s); 0 keeps it forever.', read_only=False, min_value=0.0,
              max_value=86400.0),
    ParamSpec('state_source', 'float32_array', 'Where the proprio state comes from: none, '
              'joint_states (sensor_msgs/JointState) or float32_array '
              '(std_msgs/Float32MultiArray).',
              choices=('none', 'joint_states', 'float32_array')),
    ParamSpec('state_topic', 'state', 'Topic of the state messages.'),
    ParamSpec('state_joint_names', [], 'JointState names in model state order (empty: message '
              'order).', element='string'),
    ParamSpec('state_indices', [], 'Float32MultiArray elements in model state order (empty: all).',
              element='integer'),
    ParamSpec('missing_state', 'zeros', 'When the model needs a state and none is valid: zeros '
              '(infer with a zero vector, reported as WARN) or wait (no inference).',
              read_only=False, choices=('zeros', 'wait')),
    ParamSpec('max_state_age', 1.0, 'A state older than this (s) counts as missing.',
              read_only=False, min_value=0.01, max_value=3600.0),
    ParamSpec('action_space', 'eef_delta', 'eef_delta (xyz, rotation vector, gripper: streamed as '
              'TwistStamped + Path) or joint (JointTrajectory).', choices=('eef_delta', 'joint')),
    ParamSpec('joint_names', [], 'Joint names of the first action dimensions (action_space '
              'joint).', element='string'),
    ParamSpec('gripper_index', 6, 'Action dimension published on the gripper topic (-1: none).',
              min_value=-1, max_value=63),
    ParamSpec('dt', 0.05, 'Control period (s) of one chunk step; must match the training data '
              '(LIBERO: 0.05).', min_value=0.001, max_value=10.0),
    ParamSpec('action_lower', [-1.0] * 7, 'Per-dimension lower action limits (empty: no '
              'clipping).', element='double'),
    ParamSpec('action_upper', [1.0] * 7, 'Per-dimension upper action limits (empty: no '
              'clipping).', element='double'),
    ParamSpec('linear_scale', 0.05, 'Metres per unit of an EEF translation delta (robosuite OSC '
              'default 0.05).', min_value=0.0, max_value=100.0),
    ParamSpec('angular_scale', 0.5, 'Radians per unit of an EEF rotation delta (robosuite OSC '
              'default 0.5).', min_value=0.0, max_value=100.0),
    ParamSpec('frame_id', 'base_link', 'Frame of ee_twist commands and of the ee_path poses.'),
    ParamSpec('publish_actions', False, 'Safety gate: publish on the actuation topics '
              '(joint_trajectory, ee_twist, gripper). Off by default; the ~/enable service sets '
              'it too.', read_only=False),
    ParamSpec('debug_image', True, 'Render ~/debug_image (only while it has subscribers).',
              read_only=False),
    ParamSpec('latency_budget', 0.0, 'Latency (s) above which inference is reported as WARN '
              '(0: chunk length x dt).', read_only=False, min_value=0.0, max_value=3600.0),
    ParamSpec('inference_period', 0.0, 'Minimum time (s) between inference starts (0: as fast '
              'as fresh frames arrive).', read_only=False, min_value=0.0, max_value=3600.0),
)

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

"""ROS-free model core: vision backbone, projectors, token pruning, bidirectional Llama, L1 action head,
checkpoint I/O, preprocessing and FLOPs accounting. Nothing here imports rclpy."""

from lightvla_ros.model.configuration import PruningConfig, VLAConfig
from lightvla_ros.model.errors import CheckpointError, InputError, LightVLAError

__all__ = ["CheckpointError", "InputError", "LightVLAError", "PruningConfig", "VLAConfig"]

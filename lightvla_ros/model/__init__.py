"""ROS-free model core: vision backbone, projectors, token pruning, bidirectional Llama, L1 action head,
checkpoint I/O, preprocessing and FLOPs accounting. Nothing here imports rclpy."""

from lightvla_ros.model.configuration import (
    ALLOCATORS,
    COMPILE_MODES,
    DTYPE_CHOICES,
    NOISE_KINDS,
    PREPROCESSING_CHOICES,
    PRUNING_METHODS,
    READOUT_MODES,
    PruningConfig,
    VLAConfig,
)
from lightvla_ros.model.errors import CheckpointError, InputError, LightVLAError

__all__ = ["ALLOCATORS", "COMPILE_MODES", "DTYPE_CHOICES", "NOISE_KINDS", "PREPROCESSING_CHOICES",
           "PRUNING_METHODS", "READOUT_MODES",
           "CheckpointError", "InputError", "LightVLAError", "PruningConfig", "VLAConfig"]

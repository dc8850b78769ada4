"""Builders of the node's output messages from plain arrays and policy outputs (no node state)."""

from __future__ import annotations

import zlib
from typing import Any, Mapping

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, TwistStamped
from nav_msgs.msg import Path
from rclpy.duration import Duration
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, MultiArrayDimension
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from lightvla_ros.contract import PolicyOutput
from lightvla_ros.ros.core import chunks as chunk_math
from lightvla_ros.ros.core.images import encode_rgb_fields
from lightvla_ros.ros.core.overlay import render_token_overlay


def stamp_seconds(stamp: Any) -> float:
    """A builtin_interfaces/Time as float seconds."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def stamp_text(stamp: Any) -> str:
    """A builtin_interfaces/Time as 'sec.nanosec', exact (no float rounding)."""
    return f'{int(stamp.sec)}.{int(stamp.nanosec):09d}'


def chunk_msg(actions: np.ndarray) -> Float32MultiArray:
    """The chunk as a row-major ``steps x dims`` Float32MultiArray."""
    msg = Float32MultiArray()
    for label, size, stride in chunk_math.multiarray_layout(actions.shape, ('steps', 'dims')):
        msg.layout.dim.append(MultiArrayDimension(label=label, size=size, stride=stride))
    msg.layout.data_offset = 0
    msg.data = np.ascontiguousarray(actions, dtype=np.float32).reshape(-1)
    return msg


def chunk_checksum(actions: np.ndarray) -> str:
    """CRC-32 of the chunk's float32 payload as ``action_chunk`` carries it: pairs a chunk_info with its chunk."""
    return f'{zlib.crc32(np.ascontiguousarray(actions, dtype=np.float32).tobytes()):08x}'


def chunk_info_msg(name: str, message: str, hardware_id: str, values: Mapping[str, str]) -> DiagnosticStatus:
    """The per-chunk record published on ``chunk_info`` (always level OK: it describes, it does not judge)."""
    return DiagnosticStatus(level=DiagnosticStatus.OK, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=v) for k, v in values.items()])


def twist_msg(linear: np.ndarray, angular: np.ndarray, stamp: Any, frame_id: str) -> TwistStamped:
    msg = TwistStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = map(float, linear)
    msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = map(float, angular)
    return msg


def path_msg(deltas: np.ndarray, linear_scale: float, angular_scale: float, stamp: Any, frame_id: str) -> Path:
    """The EEF poses the remaining deltas lead to, starting at the current pose (the origin of ``frame_id``)."""
    msg = Path()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    for pos, quat in chunk_math.integrate_eef_deltas(deltas[:, :6], linear_scale, angular_scale):
        pose = PoseStamped()
        pose.header = msg.header
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = map(float, pos)
        (pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z,
         pose.pose.orientation.w) = quat
        msg.poses.append(pose)
    return msg


def trajectory_msg(names: list[str], positions: np.ndarray, velocities: np.ndarray, dt: float,
                   stamp: Any) -> JointTrajectory:
    """Points ``dt`` apart, the first one ``dt`` after ``stamp``."""
    msg = JointTrajectory(joint_names=names)
    msg.header.stamp = stamp
    for j, (pos, vel) in enumerate(zip(positions, velocities)):
        msg.points.append(JointTrajectoryPoint(positions=[float(p) for p in pos], velocities=[float(v) for v in vel],
                                               time_from_start=Duration(seconds=(j + 1) * dt).to_msg()))
    return msg


def debug_image_msg(output: PolicyOutput, images: list[np.ndarray], header: Any, center_crop: bool) -> Image:
    """The camera images with the kept visual tokens highlighted."""
    overlay = render_token_overlay(images, np.asarray(output.kept_patch_indices), int(output.patches_per_image),
                                   int(output.grid_size), center_crop=center_crop)
    msg = Image(**encode_rgb_fields(overlay))
    msg.header = header
    return msg

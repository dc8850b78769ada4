"""ROS 2 interface of lightvla_ros: the inference node, the demo camera and CLI commands.

Modules directly in this package import rclpy; everything under :mod:`lightvla_ros.ros.core`
is ROS-free so it can be unit-tested without a ROS installation.
"""

"""ROS-free building blocks of the node.

Nothing here imports rclpy, message packages or torch, so these modules are testable on any
machine. Messages are accepted duck-typed (anything with the right attributes).
"""

"""lightvla_ros: run the LightVLA token-pruned OpenVLA-OFT policy on a ROS 2 robot.

Layers (dependency arrows point one way): ``lightvla_ros.ros`` -> ``lightvla_ros.policy`` -> ``lightvla_ros.model``.
"""

__version__ = "0.1.0"

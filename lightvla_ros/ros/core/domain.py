"""A private ROS 2 graph for one run: what tests, studies and ``lightvla eval-libero`` set before rclpy starts.

A run that publishes ``/clock`` or its own cameras must meet no other node, and two runs on one machine must not meet
each other. The variables are inherited by the processes the run starts.
"""

from __future__ import annotations

import os


def private_domain_id() -> int:
    """A domain id derived from this process's pid (1..101), so concurrent runs on one machine differ."""
    return 1 + os.getpid() % 101


def isolate_ros_domain(domain: int) -> int:
    """Put this process (and its children) in ROS domain ``domain``, discovering on loopback only; returns it."""
    os.environ['ROS_DOMAIN_ID'] = str(domain)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ['ROS_LOCALHOST_ONLY'] = '1'
    os.environ.pop('ROS_STATIC_PEERS', None)
    return domain

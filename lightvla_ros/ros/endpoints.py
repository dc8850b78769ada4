"""The topics a configured node reads and writes: QoS choices, QoS-event bookkeeping, creation and teardown.

Inputs use the sensor-data profile (REP-2003) for cameras and state, reliable + volatile for the instruction;
outputs are reliable, ``active_instruction`` is latched. Every endpoint accepts ``qos_overrides`` parameters, and
every incompatible-QoS event, on either side, is remembered for the diagnostics.
"""

from __future__ import annotations

from typing import Any, Callable

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float32, Float32MultiArray, String

from lightvla_ros.ros.core.params import NodeConfig
from lightvla_ros.ros.core.status import QosEvents

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
                      history=HistoryPolicy.KEEP_LAST)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def qos_text(qos: QoSProfile) -> str:
    return f'{qos.reliability.name}, {qos.durability.name}, {qos.history.name} depth {qos.depth}'


class Endpoints:
    """Subscriptions and publishers of one configuration; :meth:`destroy` removes them all."""

    def __init__(self, node: Node, config: NodeConfig, on_image: Callable[[int, Any], None],
                 on_instruction: Callable[[String], None], on_state: Callable[[Any], None]) -> None:
        self._node = node
        on_incompatible = self._on_incompatible
        self._overrides = QoSOverridingOptions.with_default_policies()
        self.output_events: dict[str, QosEvents] = {}
        self.publishers: list[Any] = []
        self.chunk = self.publisher(Float32MultiArray, 'action_chunk')
        self.chunk_info = self.publisher(DiagnosticStatus, 'chunk_info')
        self.keep_ratio = self.publisher(Float32, '~/keep_ratio')
        self.debug_image = self.publisher(Image, '~/debug_image', QoSProfile(depth=2))
        self.active_instruction = self.publisher(String, 'active_instruction', LATCHED)

        self.camera_events = [QosEvents() for _ in config.camera_topics]
        self.cameras = []
        for i, (topic, kind) in enumerate(zip(config.camera_topics, config.camera_kinds)):
            events = self.camera_events[i]
            self.cameras.append(node.create_subscription(
                CompressedImage if kind == 'compressed' else Image, topic,
                lambda msg, index=i: on_image(index, msg), qos_profile_sensor_data,
                event_callbacks=SubscriptionEventCallbacks(
                    incompatible_qos=lambda info, ev=events: on_incompatible(ev, info),
                    message_lost=lambda info, ev=events: setattr(ev, 'lost', int(info.total_count))),
                qos_overriding_options=self._overrides))
        self.instruction_events = QosEvents()
        self.instruction = node.create_subscription(
            String, config.instruction_topic, on_instruction,
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE),
            event_callbacks=SubscriptionEventCallbacks(
                incompatible_qos=lambda info: on_incompatible(self.instruction_events, info)),
            qos_overriding_options=self._overrides)
        self.state = None
        if config.state_source != 'none':
            self.state = node.create_subscription(
                JointState if config.state_source == 'joint_states' else Float32MultiArray, config.state_topic,
                on_state, qos_profile_sensor_data, qos_overriding_options=self._overrides)

    def publisher(self, msg_type: Any, topic: str, qos: QoSProfile = RELIABLE) -> Any:
        """A publisher whose incompatible-QoS events are reported by the outputs diagnostics."""
        events = QosEvents()
        pub = self._node.create_publisher(
            msg_type, topic, qos, qos_overriding_options=self._overrides,
            event_callbacks=PublisherEventCallbacks(incompatible_qos=lambda info: self._on_incompatible(events, info)))
        self.output_events[pub.topic_name] = events
        self.publishers.append(pub)
        return pub

    def _on_incompatible(self, events: QosEvents, info: Any) -> None:
        """Remember an incompatible-QoS event (either side) for the diagnostics, and say so once in the log."""
        events.incompatible = int(info.total_count)
        policy = getattr(info.last_policy_kind, 'name', str(info.last_policy_kind))
        events.last_policy = policy.removeprefix('RMW_QOS_POLICY_')
        events.last_incompatible_at = self._node.get_clock().now().nanoseconds * 1e-9
        self._node.get_logger().warning(f'incompatible QoS on a topic of this node ({events.last_policy}); '
                                        'see /diagnostics')

    def destroy(self) -> None:
        for sub in [*self.cameras, self.instruction, self.state]:
            if sub is not None:
                self._node.destroy_subscription(sub)
        for pub in self.publishers:
            self._node.destroy_publisher(pub)
        self.publishers.clear()

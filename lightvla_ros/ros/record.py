"""``lightvla record``: the topics of a training data config into a rosbag2 (MCAP by default), for machines
without ``ros2 bag`` (e.g. only the PyPI rclpy wheels), so "drive or teleoperate -> record -> train -> deploy"
needs no other tool.

Messages are stored as they arrive (serialized CDR, receive time), as ``ros2 bag record`` stores them, so
``lightvla train`` reads the result like any recording. A topic is subscribed once a publisher appears, with the
publishers' reliability and durability (as rosbag2 adapts its QoS), so best-effort camera streams are received
too. Ctrl-C (or ``--duration``) stops cleanly: the bag is closed and its metadata written.

``lightvla_ros.cli`` calls :func:`register`; importing this module needs rclpy and rosbags but not torch.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from lightvla_ros.model.errors import LightVLAError

SPIN_PERIOD = 0.1  # s; the longest a stop request waits
DISCOVERY_PERIOD = 0.5  # s between looks for publishers of the topics not yet subscribed
QUEUE_DEPTH = 100  # per topic, so bursts of camera frames are not dropped while the bag writes


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``record`` subcommand."""
    p = subparsers.add_parser(
        'record', help='record the topics of a training data config into a rosbag2 (MCAP)',
        description='Records the cameras, instruction, state and action topics named in a '
                    '--data-config (default: the node\'s default topics) into a rosbag2 folder that '
                    '`lightvla train --data OUT` reads. Stops on Ctrl-C or after --duration.')
    p.add_argument('out', help='bag folder to create (must not exist)')
    p.add_argument('--data-config', help='YAML topic mapping, as for lightvla train '
                   '(`lightvla train --example-data-config rosbag`); default: the node\'s topics')
    p.add_argument('--storage', default='mcap', choices=['mcap', 'sqlite3'])
    p.add_argument('--duration', type=float, default=0.0, help='seconds to record (0: until Ctrl-C)')
    p.add_argument('--domain-id', type=int, default=None, help='ROS domain (default: $ROS_DOMAIN_ID)')
    p.set_defaults(func=cmd_record)


def adapted_qos(publishers: list[Any]) -> QoSProfile:
    """Reliable / transient-local only when every publisher offers it (a reliable subscription would not match a
    best-effort camera; a best-effort one still receives from reliable publishers)."""
    reliable = bool(publishers) and all(
        p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers)
    latched = bool(publishers) and all(
        p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publishers)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=QUEUE_DEPTH,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def message_class(msgtype: str) -> type:
    """The Python class of ``pkg/msg/Name`` (the raw subscription needs it for its type support)."""
    package, _, name = msgtype.split('/')
    try:
        return getattr(importlib.import_module(f'{package}.msg'), name)
    except (ImportError, AttributeError) as exc:
        raise LightVLAError(f'cannot record {msgtype}: its Python message package is not installed ({exc})') from exc


@dataclass
class TopicCounter:
    """What one recorded topic has received."""

    msgtype: str = ''
    messages: int = 0
    size: int = 0


@dataclass
class Recorder:
    """Subscribes to ``topics`` (name -> accepted message types) as publishers appear and writes what arrives."""

    node: Node
    writer: Any  # rosbags.rosbag2.Writer, open
    topics: dict[str, tuple[str, ...]]
    counters: dict[str, TopicCounter] = field(init=False)

    def __post_init__(self) -> None:
        from rosbags.typesys import Stores, get_typestore

        self.typestore = get_typestore(Stores.LATEST)
        self.counters = {topic: TopicCounter() for topic in self.topics}
        self._subscriptions: list[Any] = []

    def discover(self) -> None:
        """Subscribe to each wanted topic that now has a publisher; a type the trainer cannot read is an error."""
        for topic, types in self.node.get_topic_names_and_types():
            counter = self.counters.get(topic)
            if counter is None or counter.msgtype:
                continue
            accepted = self.topics[topic]
            msgtype = next((t for t in types if t in accepted), None)
            if msgtype is None:
                raise LightVLAError(f'{topic} carries {", ".join(types)}; lightvla train reads '
                                    f'{" or ".join(accepted)} there. Fix the topic or the --data-config.')
            connection = self.writer.add_connection(topic, msgtype, typestore=self.typestore)
            qos = adapted_qos(self.node.get_publishers_info_by_topic(topic))
            counter.msgtype = msgtype

            def on_message(data: bytes, info: Any, connection=connection, counter=counter) -> None:
                stamp = int(info['received_timestamp']) or time.time_ns()
                self.writer.write(connection, stamp, data)
                counter.messages += 1
                counter.size += len(data)

            self._subscriptions.append(self.node.create_subscription(
                message_class(msgtype), topic, on_message, qos, raw=True))

    def progress(self, elapsed: float) -> str:
        """One line: time, size and each topic's message count (or that it waits for a publisher)."""
        size = sum(c.size for c in self.counters.values())
        parts = [f'{topic} {c.messages}' if c.msgtype else f'{topic} (no publisher yet)'
                 for topic, c in self.counters.items()]
        return f'recording {elapsed:6.1f} s, {size / 1e6:7.1f} MB | ' + ' | '.join(parts)


class _StopRequest:
    """SIGINT/SIGTERM set a flag that the spin loop checks, so a write is never cut in half."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> '_StopRequest':
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._request)
        return self

    def _request(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def cmd_record(args: argparse.Namespace) -> int:
    from rosbags.rosbag2 import StoragePlugin, Writer

    from lightvla_ros.training.rosbag import BagConfig

    out = Path(args.out)
    if out.exists():
        raise LightVLAError(f'{out} exists; rosbag2 writes a new folder (choose another name)')
    topics = BagConfig.load(args.data_config).topic_types()
    plugin = StoragePlugin.MCAP if args.storage == 'mcap' else StoragePlugin.SQLITE3
    context = Context()
    rclpy.init(context=context, domain_id=args.domain_id, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node('lightvla_record', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    stream: TextIO = sys.stderr
    try:
        with Writer(out, version=9, storage_plugin=plugin) as writer, _StopRequest() as stop:
            recorder = Recorder(node, writer, topics)
            print(f'recording {", ".join(topics)} into {out} ({args.storage}); Ctrl-C stops', file=stream, flush=True)
            elapsed = _record(recorder, executor, stop, args.duration, stream)
    finally:
        node.destroy_node()
        context.try_shutdown()
    silent = [topic for topic, c in recorder.counters.items() if not c.messages]
    print(f'wrote {out}: {sum(c.messages for c in recorder.counters.values())} message(s) in {elapsed:.1f} s; '
          + ', '.join(f'{topic} {c.messages}' for topic, c in recorder.counters.items()), file=stream)
    if silent:
        print(f'lightvla record: nothing received on {", ".join(silent)}; are they published '
              '(same ROS_DOMAIN_ID)?', file=stream)
        return 1
    config = f' --data-config {args.data_config}' if args.data_config else ''
    print(f'  train on it: lightvla train --data {out}{config} --checkpoint ... --out ...', file=stream)
    return 0


def _record(recorder: Recorder, executor: SingleThreadedExecutor, stop: _StopRequest, duration: float,
            stream: TextIO) -> float:
    """Spin until a stop request or ``duration``; a progress line each second (rewritten in place on a terminal)."""
    start = time.monotonic()
    next_discovery = next_progress = start
    interactive = stream.isatty()
    while not stop.requested and (duration <= 0 or time.monotonic() - start < duration):
        now = time.monotonic()
        if now >= next_discovery:
            recorder.discover()
            next_discovery = now + DISCOVERY_PERIOD
        if now >= next_progress:
            line = recorder.progress(now - start)
            print(f'\r{line}' if interactive else line, end='' if interactive else '\n', file=stream, flush=True)
            next_progress = now + (1.0 if interactive else 5.0)
        try:
            executor.spin_once(timeout_sec=SPIN_PERIOD)
        except ExternalShutdownException:
            break
    if interactive:
        print(file=stream)
    return time.monotonic() - start

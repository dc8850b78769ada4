"""``lightvla demo | instruct | monitor``: the ROS side of the command line, for machines without
the ROS 2 CLI (e.g. only the PyPI rclpy wheels).

``lightvla_ros.cli`` calls :func:`register`; importing this module needs rclpy but not torch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.context import Context
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from lightvla_ros.ros.core.status import LEVEL_NAMES
from lightvla_ros.ros.entry import spin_until

DEFAULT_INSTRUCTION = 'put the black bowl on the plate'
SPIN_PERIOD = 0.05  # s; the clients here only wait for discovery, readiness or a deadline
INSTRUCTION_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo``, ``instruct`` and ``monitor`` subcommands."""
    p = subparsers.add_parser(
        'demo', help='run the node, a demo camera and an instruction for a bounded time',
        description='Starts lightvla_node, a synthetic (or folder/video) camera and an '
                    'instruction in one process, prints a live table of action chunks and pruning '
                    'statistics, and saves the last debug image (kept tokens highlighted).')
    p.add_argument('--checkpoint', required=True, help='checkpoint folder (release layout)')
    p.add_argument('--duration', type=float, default=15.0,
                   help='seconds to run once the model is ready (default 15)')
    p.add_argument('--load-timeout', type=float, default=300.0,
                   help='give up when the model is not ready after this many seconds')
    p.add_argument('--instruction', default=DEFAULT_INSTRUCTION)
    p.add_argument('--device', default='auto', help='auto | cpu | cuda | cuda:N')
    p.add_argument('--pruning', default='lightvla', choices=['lightvla', 'lightvla_star', 'none'])
    p.add_argument('--max-kept-tokens', type=int, default=0, help='0: no cap')
    p.add_argument('--cpu-threads', type=int, default=0,
                   help='torch threads for CPU inference (0: torch default; 1 on a busy machine)')
    p.add_argument('--rate', type=float, default=10.0, help='demo camera frames per second')
    p.add_argument('--source', default='', help='image folder or video file (default: synthetic)')
    p.add_argument('--no-center-crop', action='store_true',
                   help='disable the LIBERO centre crop')
    p.add_argument('--debug-png', default='lightvla_debug.png',
                   help='where to save the last debug image (default ./lightvla_debug.png)')
    p.add_argument('--domain-id', type=int, default=None,
                   help='ROS domain for the demo (default: $ROS_DOMAIN_ID)')
    p.set_defaults(func=cmd_demo)

    p = subparsers.add_parser('instruct', help='send an instruction (like ros2 topic pub --once)')
    p.add_argument('text', help='the instruction; "" or "stop" stops the robot')
    p.add_argument('--topic', default='/instruction')
    p.add_argument('--timeout', type=float, default=10.0,
                   help='seconds to wait for a subscriber and its acknowledgement')
    p.add_argument('--domain-id', type=int, default=None)
    p.set_defaults(func=cmd_instruct)

    p = subparsers.add_parser('monitor', help='print /diagnostics readably')
    p.add_argument('--topic', default='/diagnostics',
                   help='/diagnostics (raw) or /diagnostics_agg (aggregated)')
    p.add_argument('--duration', type=float, default=0.0, help='seconds (0: until Ctrl-C)')
    p.add_argument('--count', type=int, default=0,
                   help='stop after this many arrays (0: no limit)')
    p.add_argument('--filter', default='', help='only statuses whose name contains this text')
    p.add_argument('--brief', action='store_true', help='one line per status, no values')
    p.add_argument('--domain-id', type=int, default=None)
    p.set_defaults(func=cmd_monitor)


def _init(domain_id: int | None) -> Context:
    context = Context()
    rclpy.init(context=context, domain_id=domain_id)
    return context


# ---------------------------------------------------------------------------------------- instruct

def cmd_instruct(args: argparse.Namespace) -> int:
    """Publish one instruction reliably and wait until the subscriber acknowledged it."""
    context = _init(args.domain_id)
    node = rclpy.create_node('lightvla_instruct', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        pub = node.create_publisher(String, args.topic, INSTRUCTION_QOS)
        if not spin_until(executor, lambda: pub.get_subscription_count() > 0, args.timeout, SPIN_PERIOD):
            print(f'lightvla instruct: no subscriber on {pub.topic_name} within '
                  f'{args.timeout:.0f} s; is lightvla_node running (same ROS_DOMAIN_ID)?',
                  file=sys.stderr)
            return 1
        pub.publish(String(data=args.text))
        acked = pub.wait_for_all_acked(Duration(seconds=args.timeout))
        what = f'"{args.text}"' if args.text.strip() else '(empty: stop)'
        if not acked:
            print(f'lightvla instruct: {what} sent to {pub.topic_name} but not acknowledged',
                  file=sys.stderr)
            return 1
        print(f'sent {what} to {pub.topic_name} '
              f'({pub.get_subscription_count()} subscriber(s))')
        return 0
    finally:
        node.destroy_node()
        context.try_shutdown()


# ---------------------------------------------------------------------------------------- monitor

def format_status(status: DiagnosticStatus, brief: bool = False) -> str:
    """Readable text of one DiagnosticStatus: level, name and message, then its values."""
    level = LEVEL_NAMES.get(status.level[0] if isinstance(status.level, bytes) else int(status.level),
                       '?')
    lines = [f'[{level:<5}] {status.name}: {status.message}']
    if not brief:
        width = max((len(kv.key) for kv in status.values), default=0)
        lines += [f'          {kv.key:<{width}}  {kv.value}' for kv in status.values]
    return '\n'.join(lines)


def format_array(msg: DiagnosticArray, name_filter: str = '', brief: bool = False) -> str:
    """Readable text of a DiagnosticArray (statuses filtered by name)."""
    stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
    shown = [s for s in msg.status if name_filter in s.name]
    header = (f'--- {time.strftime("%H:%M:%S", time.localtime(stamp))} '
              f'{len(shown)} status(es)')
    return '\n'.join([header] + [format_status(s, brief) for s in shown])


def cmd_monitor(args: argparse.Namespace) -> int:
    """Print every DiagnosticArray until the duration or count is reached."""
    context = _init(args.domain_id)
    node = rclpy.create_node('lightvla_monitor', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    received = [0]

    def on_array(msg: DiagnosticArray) -> None:
        received[0] += 1
        print(format_array(msg, args.filter, args.brief), flush=True)

    node.create_subscription(DiagnosticArray, args.topic, on_array, 10)
    limit = args.duration if args.duration > 0 else float('inf')
    start = time.monotonic()
    try:
        while time.monotonic() - start < limit:
            if args.count and received[0] >= args.count:
                break
            executor.spin_once(timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        context.try_shutdown()
    if not received[0]:
        print(f'lightvla monitor: nothing received on {args.topic}; is a node running with the '
              'same ROS_DOMAIN_ID?', file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------------------- demo

class _DemoTable:
    """Prints one row per chunk (rate-limited) and keeps the numbers for the summary."""

    HEADER = (f"{'chunk':>5} {'t (s)':>6} {'latency ms':>10} {'kept/total':>10} {'ratio':>6} "
              f"{'FLOPs saved':>11} {'trim':>4}  first action")

    def __init__(self, out: TextIO, min_interval: float = 0.25) -> None:
        self.out = out
        self.rows: list[dict[str, str]] = []
        self._last_print = -1e9
        self._min_interval = min_interval
        self.start = time.monotonic()
        self.first_actions: dict[str, str] = {}

    def begin(self) -> None:
        """Print the header and start the clock of the t column."""
        self.start = time.monotonic()
        print(self.HEADER, file=self.out, flush=True)

    def add(self, values: dict[str, str]) -> None:
        self.rows.append(values)
        now = time.monotonic()
        if now - self._last_print < self._min_interval:
            return
        self._last_print = now
        kept = f"{values.get('kept_tokens', '?')}/{values.get('total_tokens', '?')}"
        saved = 100 * float(values.get('flops_saved_fraction', 0.0))
        print(f"{values.get('chunk_id', '?'):>5} {now - self.start:6.1f} "
              f"{float(values.get('latency_ms', 0.0)):10.1f} {kept:>10} "
              f"{float(values.get('keep_ratio', 0.0)):6.3f} {saved:10.1f}% "
              f"{values.get('trimmed_steps', '?'):>4}  "
              f"{self.first_actions.get(values.get('chunk_id', ''), '')}",
              file=self.out, flush=True)


def _save_png(msg: Image, path: str) -> None:
    import numpy as np
    from PIL import Image as PILImage

    from lightvla_ros.ros.core.images import decode_raw_image

    rgb = decode_raw_image(msg)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(np.ascontiguousarray(rgb)).save(path)


def cmd_demo(args: argparse.Namespace) -> int:
    """Node + demo camera + instruction in one process, for a bounded time."""
    from std_msgs.msg import Float32MultiArray

    from lightvla_ros.ros.demo_camera import DemoCamera
    from lightvla_ros.ros.node import LightVLANode

    if not Path(args.checkpoint).is_dir():
        print(f'lightvla demo: checkpoint folder {args.checkpoint} does not exist '
              '(make one with: lightvla make-tiny /tmp/lightvla-tiny)', file=sys.stderr)
        return 2
    context = _init(args.domain_id)
    overrides = [Parameter('checkpoint', value=str(args.checkpoint)),
                 Parameter('device', value=args.device),
                 Parameter('pruning', value=args.pruning),
                 Parameter('max_kept_tokens', value=int(args.max_kept_tokens)),
                 Parameter('center_crop', value=not args.no_center_crop),
                 Parameter('cpu_threads', value=int(args.cpu_threads)),
                 Parameter('publish_actions', value=True),
                 Parameter('debug_image', value=True)]
    node = LightVLANode(context=context, parameter_overrides=overrides)
    camera = DemoCamera(context=context, parameter_overrides=[
        Parameter('rate', value=float(args.rate)), Parameter('source', value=args.source)])
    client = rclpy.create_node('lightvla_demo_client', context=context)
    executor = SingleThreadedExecutor(context=context)
    for n in (node, camera, client):
        executor.add_node(n)
    table = _DemoTable(sys.stdout)
    last: dict[str, Any] = {'debug': None, 'diagnostics': None, 'twists': 0}

    def on_chunk(msg: Float32MultiArray) -> None:
        dims = msg.layout.dim[1].size if len(msg.layout.dim) == 2 else len(msg.data)
        first = ' '.join(f'{v:+.3f}' for v in list(msg.data)[:dims])
        table.first_actions[str(len(table.first_actions) + 1)] = first

    client.create_subscription(Float32MultiArray, 'action_chunk', on_chunk, 10)
    client.create_subscription(DiagnosticStatus, 'chunk_info',
                               lambda m: table.add({kv.key: kv.value for kv in m.values}), 10)
    client.create_subscription(Image, f'/{node.get_name()}/debug_image',
                               lambda m: last.__setitem__('debug', m), 2)
    client.create_subscription(DiagnosticArray, '/diagnostics',
                               lambda m: last.__setitem__('diagnostics', m), 10)
    from geometry_msgs.msg import TwistStamped

    client.create_subscription(TwistStamped, 'ee_twist',
                               lambda m: last.__setitem__('twists', last['twists'] + 1), 10)
    instruction = client.create_publisher(String, 'instruction', INSTRUCTION_QOS)
    try:
        print(f'loading {args.checkpoint} (device {args.device}) ...', flush=True)
        ready = spin_until(executor, lambda: node.model_state in ('ready', 'failed') or bool(node.model_error),
                           args.load_timeout, SPIN_PERIOD)
        if not ready or node.model_state != 'ready':
            reason = node.model_error if ready else f'not ready after {args.load_timeout:.0f} s'
            print(f'lightvla demo: model unavailable: {reason}', file=sys.stderr)
            return 1
        spin_until(executor, lambda: instruction.get_subscription_count() > 0, 10.0, SPIN_PERIOD)
        instruction.publish(String(data=args.instruction))
        table.begin()
        print(f'instruction: "{args.instruction}"  (running {args.duration:.0f} s)', flush=True)
        spin_until(executor, lambda: False, args.duration, SPIN_PERIOD)
    except KeyboardInterrupt:
        pass
    finally:
        instruction.publish(String(data=''))
        executor.spin_once(timeout_sec=0.1)
        for n in (client, camera, node):
            n.destroy_node()
        context.try_shutdown()
    return _demo_summary(table, last, args.debug_png)


def _demo_summary(table: _DemoTable, last: dict[str, Any], png: str) -> int:
    rows = table.rows
    print()
    if not rows:
        print('lightvla demo: no action chunk was produced', file=sys.stderr)
        if last['diagnostics'] is not None:
            print(format_array(last['diagnostics'], brief=True), file=sys.stderr)
        return 1
    latencies = sorted(float(r['latency_ms']) for r in rows)
    kept = [int(r['kept_tokens']) for r in rows]
    saved = [float(r['flops_saved_fraction']) for r in rows]
    print(f'{len(rows)} chunks; latency p50 {latencies[len(latencies) // 2]:.1f} ms, '
          f'max {latencies[-1]:.1f} ms; kept tokens mean {sum(kept) / len(kept):.1f} '
          f'(min {min(kept)}, max {max(kept)}) of {rows[-1]["total_tokens"]}; '
          f'FLOPs saved mean {100 * sum(saved) / len(saved):.1f}%; '
          f'{last["twists"]} ee_twist commands streamed')
    if last['debug'] is not None:
        _save_png(last['debug'], png)
        print(f'debug image (kept tokens highlighted, pruned dimmed): {png}')
    if last['diagnostics'] is not None:
        print(format_array(last['diagnostics'], brief=True))
    return 0

#!/usr/bin/env python3
"""Frame loss between two ROS 2 processes on this host: two 640x480 rgb8 cameras at 30 Hz, with and without
the Fast DDS transport profile of config/fastdds_camera_transport.xml.

    python benchmarks/transport_loss.py                       # 10 s per case, all cases
    python benchmarks/transport_loss.py --seconds 30 --qos sensor_data --profile-on none both

Each case starts a subscriber process and a publisher process on a private ROS_DOMAIN_ID (random in 100..200)
with discovery restricted to this host, gives FASTDDS_DEFAULT_PROFILES_FILE to the side(s) named by
``--profile-on``, publishes for ``--seconds`` once the publisher sees its subscriber, and prints received/sent per
camera, with the losses Fast DDS itself reported to the subscriber (message_lost events) and the delivery latency
(header stamp to callback). It also lists the Fast DDS shared-memory segments (/dev/shm/fastdds_*) the two
processes mapped, which shows whether the profile was picked up (16 MiB beside the default 512 KiB), and the
host's UDP counters during the case (/proc/net/snmp; system-wide), which show how much went over UDP loopback and
how much of it the receiving socket dropped because its buffer was full.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

PROFILE = Path(__file__).resolve().parents[1] / 'config' / 'fastdds_camera_transport.xml'
TOPICS = ('/camera/image_raw', '/wrist_camera/image_raw')
# QoS of the publisher and the subscriber. lightvla_node subscribes with sensor-data QoS, so a reliable camera
# driver talks to it best effort (the 'reliable_to_sensor_data' case).
QOS_CASES = {'sensor_data': ('sensor_data', 'sensor_data'), 'reliable': ('reliable', 'reliable'),
             'reliable_to_sensor_data': ('reliable', 'sensor_data')}
SIDES = ('none', 'publisher', 'subscriber', 'both')
SHM_DIR = Path('/dev/shm')
SNMP = Path('/proc/net/snmp')
MATCH_TIMEOUT_S = 15.0
DRAIN_S = 1.0  # after the last frame, before the subscriber is asked for its counts


@dataclass
class Case:
    """One measured configuration and what it delivered."""

    qos: str
    profile_on: str
    seconds: float
    sent: list[int] = field(default_factory=list)
    received: list[int] = field(default_factory=list)
    reported_lost: list[int] = field(default_factory=list)
    latency_ms_p50: list[float] = field(default_factory=list)
    latency_ms_p95: list[float] = field(default_factory=list)
    shm_segments_mib: list[float] = field(default_factory=list)
    load_average: float = 0.0  # 1-minute load average of the host at the end of the case
    udp_datagrams: int = 0
    udp_receive_buffer_errors: int = 0
    errors: list[str] = field(default_factory=list)

    def loss(self, camera: int) -> float:
        sent = self.sent[camera] if camera < len(self.sent) else 0
        received = self.received[camera] if camera < len(self.received) else 0
        return 1.0 - received / sent if sent else float('nan')


def _qos(kind: str):
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    if kind == 'sensor_data':
        return qos_profile_sensor_data
    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _stamp_setter(serialized: bytes):
    """Writes a stamp into a serialized (CDR) message in place: its header.stamp follows the 4-byte encapsulation."""
    little = serialized[1] == 1  # CDR_LE / CDR_BE encapsulation identifiers 0x0001 / 0x0000
    layout = struct.Struct('<iI' if little else '>iI')
    buffer = bytearray(serialized)

    def stamped(sec: int, nanosec: int) -> bytes:
        layout.pack_into(buffer, 4, sec, nanosec)
        return bytes(buffer)

    return stamped, layout


def publish(qos: str, seconds: float, rate: float, width: int, height: int) -> int:
    """Child process: wait for a subscriber on both topics, publish for ``seconds``, print the sent counts.

    Frames are serialized once and re-stamped, so the Python side costs a copy, not a conversion, per frame.
    """
    import rclpy
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node('transport_loss_publisher')
    publishers = [node.create_publisher(Image, topic, _qos(qos)) for topic in TOPICS]
    deadline = time.monotonic() + MATCH_TIMEOUT_S
    while any(p.get_subscription_count() == 0 for p in publishers):
        if time.monotonic() > deadline:
            print(json.dumps({'error': 'no subscriber matched'}), flush=True)
            return 1
        time.sleep(0.05)
    time.sleep(0.5)  # the subscriber side of the match completes shortly after ours
    frames = []
    for topic in TOPICS:
        frame = Image(height=height, width=width, encoding='rgb8', is_bigendian=0, step=width * 3)
        frame.header.frame_id = topic
        frame.data = bytes(width * height * 3)
        frames.append(_stamp_setter(serialize_message(frame))[0])
    sent = [0] * len(TOPICS)
    period = 1.0 / rate
    start = time.monotonic()
    tick = start
    while tick - start < seconds:
        sec, nanosec = divmod(time.time_ns(), 10**9)
        for camera, publisher in enumerate(publishers):
            publisher.publish(frames[camera](sec, nanosec))
            sent[camera] += 1
        tick += period
        time.sleep(max(0.0, tick - time.monotonic()))
    print(json.dumps({'sent': sent}), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


def subscribe(qos: str) -> int:
    """Child process: count frames per topic until SIGINT, then print the counts, the delivery latency and the
    losses the middleware itself reported (message_lost events).

    Frames are taken serialized (no conversion to Python), so a busy CPU delays the count less.
    """
    import rclpy
    from rclpy.event_handler import SubscriptionEventCallbacks
    from rclpy.executors import ExternalShutdownException
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node('transport_loss_subscriber')
    received = [0] * len(TOPICS)
    reported_lost = [0] * len(TOPICS)
    latencies: list[list[float]] = [[] for _ in TOPICS]
    layout: list[struct.Struct] = []

    def counter(camera: int):
        def count(serialized: bytes) -> None:
            now = time.time_ns()
            if not layout:
                layout.append(_stamp_setter(serialized)[1])
            sec, nanosec = layout[0].unpack_from(serialized, 4)
            received[camera] += 1
            latencies[camera].append((now - sec * 10**9 - nanosec) / 1e6)
        return count

    def lost(camera: int):
        def count(info) -> None:
            reported_lost[camera] += info.total_count_change
        return count

    subscriptions = [node.create_subscription(  # noqa: F841
        Image, topic, counter(i), _qos(qos), raw=True,
        event_callbacks=SubscriptionEventCallbacks(message_lost=lost(i))) for i, topic in enumerate(TOPICS)]
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    percentiles = [sorted(ms)[int(q * (len(ms) - 1))] if ms else float('nan')
                   for q in (0.5, 0.95) for ms in latencies]
    print(json.dumps({'received': received, 'reported_lost': reported_lost, 'p50': percentiles[:len(TOPICS)],
                      'p95': percentiles[len(TOPICS):]}), flush=True)
    return 0


def isolated_environment() -> dict[str, str]:
    """A private domain on this host only, Fast DDS, and no Fast DDS profile."""
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(random.randint(100, 200)), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               RMW_IMPLEMENTATION='rmw_fastrtps_cpp', PYTHONUNBUFFERED='1')
    for name in ('ROS_LOCALHOST_ONLY', 'ROS_STATIC_PEERS', 'FASTRTPS_DEFAULT_PROFILES_FILE',
                 'FASTDDS_DEFAULT_PROFILES_FILE', 'FASTDDS_BUILTIN_TRANSPORTS', 'ROS_DISCOVERY_SERVER'):
        env.pop(name, None)
    return env


def _shm_segments(pids: list[int]) -> dict[str, int]:
    """Fast DDS data segments (/dev/shm/fastdds_*, not the port queues) mapped by these processes, with sizes."""
    segments = {}
    for pid in pids:
        try:
            maps = Path(f'/proc/{pid}/maps').read_text()
        except OSError:  # exited, or no /proc here
            continue
        for line in maps.splitlines():
            path = line.split()[-1]
            name = Path(path).name
            if path.startswith(str(SHM_DIR)) and name.startswith('fastdds_') and '_port' not in name:
                try:
                    segments[name] = Path(path).stat().st_size
                except OSError:
                    continue
    return segments


def _udp_counters() -> dict[str, int]:
    """The kernel's UDP counters (InDatagrams, RcvbufErrors, ...); empty where /proc/net/snmp is absent."""
    if not SNMP.is_file():
        return {}
    udp = [line.split()[1:] for line in SNMP.read_text().splitlines() if line.startswith('Udp:')]
    return dict(zip(udp[0], map(int, udp[1]))) if len(udp) == 2 else {}


def _last_json(text: str) -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith('{'):
            return json.loads(line)
    return {}


def run_case(qos: str, profile_on: str, seconds: float, rate: float = 30.0, width: int = 640,
             height: int = 480, profile: Path = PROFILE) -> Case:
    """Measure one configuration with a fresh subscriber and publisher process."""
    case = Case(qos, profile_on, seconds)
    domain_env = isolated_environment()
    pub_env = dict(domain_env)
    sub_env = dict(domain_env)
    if profile_on in ('publisher', 'both'):
        pub_env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile)
    if profile_on in ('subscriber', 'both'):
        sub_env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile)
    me = [sys.executable, str(Path(__file__).resolve())]
    udp_before = _udp_counters()
    pub_qos, sub_qos = QOS_CASES[qos]
    subscriber = subprocess.Popen([*me, '--role', 'subscribe', '--qos', sub_qos], env=sub_env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    publisher = subprocess.Popen([*me, '--role', 'publish', '--qos', pub_qos, '--seconds', str(seconds),
                                  '--rate', str(rate), '--size', f'{width}x{height}'], env=pub_env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    segments: dict[str, int] = {}
    try:
        while publisher.poll() is None:  # the segments exist while the processes run
            segments.update(_shm_segments([publisher.pid, subscriber.pid]))
            time.sleep(0.5)
        pub_out, pub_err = publisher.communicate()
        udp_after = _udp_counters()
        case.load_average = round(os.getloadavg()[0], 1)
        time.sleep(DRAIN_S)
        subscriber.send_signal(signal.SIGINT)
        sub_out, sub_err = subscriber.communicate(timeout=30)
    finally:
        for proc in (publisher, subscriber):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    pub_result, sub_result = _last_json(pub_out), _last_json(sub_out)
    case.sent = pub_result.get('sent', [])
    case.received = sub_result.get('received', [])
    case.reported_lost = sub_result.get('reported_lost', [])
    case.latency_ms_p50 = [round(v, 2) for v in sub_result.get('p50', [])]
    case.latency_ms_p95 = [round(v, 2) for v in sub_result.get('p95', [])]
    case.shm_segments_mib = sorted(round(size / 2**20, 2) for size in segments.values())
    if udp_before and udp_after:
        case.udp_datagrams = udp_after['InDatagrams'] - udp_before['InDatagrams']
        case.udp_receive_buffer_errors = udp_after['RcvbufErrors'] - udp_before['RcvbufErrors']
    if 'error' in pub_result:
        case.errors.append(f"publisher: {pub_result['error']}")
    for side, err in (('publisher', pub_err), ('subscriber', sub_err)):
        case.errors += [f'{side}: {line}' for line in err.splitlines() if 'Error' in line or 'ERROR' in line]
    return case


def print_table(cases: list[Case]) -> None:
    print('| QoS (publisher -> subscriber) | profile on | camera | received / sent | lost | reported lost '
          '| latency p50 / p95 (ms) | SHM segments (MiB) | UDP datagrams (dropped: buffer full) |')
    print('|---|---|---|---:|---:|---:|---:|---|---:|')
    for case in cases:
        for camera, topic in enumerate(TOPICS):
            sent = case.sent[camera] if camera < len(case.sent) else 0
            received = case.received[camera] if camera < len(case.received) else 0
            reported = case.reported_lost[camera] if camera < len(case.reported_lost) else 'n/a'
            segments = ', '.join(f'{s:g}' for s in case.shm_segments_mib) if camera == 0 else ''
            udp = f'{case.udp_datagrams} ({case.udp_receive_buffer_errors})' if camera == 0 else ''
            latency = (f'{case.latency_ms_p50[camera]:.1f} / {case.latency_ms_p95[camera]:.1f}'
                       if camera < len(case.latency_ms_p50) else 'n/a')
            pub_qos, sub_qos = QOS_CASES[case.qos]
            print(f'| {pub_qos} -> {sub_qos} | {case.profile_on} | {topic} | {received} / {sent} | '
                  f'{100 * case.loss(camera):.0f}% | {reported} | {latency} | {segments} | {udp} |')
        for error in case.errors:
            print(f'  ! {error}')
    print(f'\nload average (1 min) at the end of each case: {", ".join(str(c.load_average) for c in cases)} '
          f'on {os.cpu_count()} CPUs; "reported lost" counts what Fast DDS told the subscriber it lost in transport')


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition('x')
    return int(width), int(height)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seconds', type=float, default=10.0, help='publishing time per case')
    parser.add_argument('--rate', type=float, default=30.0, help='frames per second per camera')
    parser.add_argument('--size', type=_size, default=(640, 480), help='WIDTHxHEIGHT of the rgb8 frames')
    parser.add_argument('--qos', nargs='+', choices=list(QOS_CASES),
                        default=list(QOS_CASES),
                        help='sensor_data: best effort, depth 5, both sides; reliable: reliable, depth 10, both '
                             'sides; reliable_to_sensor_data: a reliable camera and a sensor-data subscriber '
                             'like lightvla_node')
    parser.add_argument('--profile-on', nargs='+', choices=SIDES, default=list(SIDES),
                        help='which process gets FASTDDS_DEFAULT_PROFILES_FILE')
    parser.add_argument('--profile', type=Path, default=PROFILE, help='the Fast DDS XML profile')
    parser.add_argument('--json', type=Path, help='also write the results here')
    parser.add_argument('--role', choices=('publish', 'subscribe'), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == 'publish':
        return publish(args.qos[0], args.seconds, args.rate, *args.size)
    if args.role == 'subscribe':
        return subscribe(args.qos[0])
    cases = []
    for qos in args.qos:
        for side in args.profile_on:
            case = run_case(qos, side, args.seconds, args.rate, *args.size, profile=args.profile.resolve())
            cases.append(case)
            print(f'{qos:11s} profile on {side:10s}: '
                  + ', '.join(f'{100 * case.loss(i):.0f}%' for i in range(len(TOPICS))) + ' lost',
                  file=sys.stderr, flush=True)
    print_table(cases)
    if args.json:
        args.json.write_text(json.dumps([asdict(c) for c in cases], indent=2))
    return 0 if all(c.sent and c.received for c in cases) else 1


if __name__ == '__main__':
    sys.exit(main())

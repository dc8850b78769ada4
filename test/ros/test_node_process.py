"""End to end: lightvla_node in its own process with the tiny checkpoint, driven from this process.

One node process serves every test in the module (the model loads once). The node gets the shipped
config/lightvla.yaml, with the wrist camera switched to CompressedImage so both decoders run.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import simplejpeg
from ros_support import REPO_ROOT, info_values, isolate_ros_environment, spin_until, stop_process, tiny_checkpoint

isolate_ros_environment()

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.duration import Duration  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Float32MultiArray, String  # noqa: E402

CHECKPOINT = tiny_checkpoint()
pytestmark = pytest.mark.skipif(
    CHECKPOINT is None, reason='tiny checkpoint fixture not found: set LIGHTVLA_FIXTURES to a '
                               'folder containing oft-tiny-libero (default ../shared/fixtures)')
DT = 0.2
LOAD_TIMEOUT = 180.0


def _frames() -> list[np.ndarray]:
    from PIL import Image as PILImage

    return [np.asarray(PILImage.open(CHECKPOINT / f'case0_image{k}.png').convert('RGB'))
            for k in range(2)]


def start_node(log: Path, *ros_args: str) -> subprocess.Popen:
    """Start ``python -m lightvla_ros.ros.node`` with the shipped parameter file."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]),
        PYTHONUNBUFFERED='1', RCUTILS_COLORIZED_OUTPUT='0')
    cmd = [sys.executable, '-m', 'lightvla_ros.ros.node', '--ros-args',
           '--params-file', str(REPO_ROOT / 'config' / 'lightvla.yaml'), *ros_args]
    with open(log, 'wb') as out:
        return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


class Client:
    """The test side: publishers for cameras, state and instructions, and output subscribers."""

    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('e2e_client', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.got: dict[str, list] = defaultdict(list)
        for msg_type, topic in ((DiagnosticStatus, '/chunk_info'),
                                (Float32MultiArray, '/action_chunk'),
                                (DiagnosticArray, '/diagnostics'),
                                (String, '/active_instruction')):
            self.node.create_subscription(msg_type, topic, self.got[topic].append, 50)
        self.used_stamps: set[str] = set()  # obs stamps of every chunk ever received
        self.node.create_subscription(
            DiagnosticStatus, '/chunk_info',
            lambda s: self.used_stamps.add(info_values(s)['obs_stamp']), 50)
        self.raw = self.node.create_publisher(Image, '/camera/image_raw', 5)
        self.compressed = self.node.create_publisher(CompressedImage,
                                                     '/wrist_camera/image_raw/compressed', 5)
        self.instruction = self.node.create_publisher(String, '/instruction', 10)
        self.state = self.node.create_publisher(Float32MultiArray, '/state', 10)
        self.images = _frames()
        self.sent_bad: set[str] = set()  # stamps of frame sets that carried a bad image

    def wait(self, predicate: Any, timeout: float = 10.0) -> bool:
        return spin_until(self.executor, predicate, timeout)

    def now(self) -> Any:
        return self.node.get_clock().now()

    def frames(self, age: float = 0.0, raw: Image | None = None,
               compressed: CompressedImage | None = None) -> Any:
        stamp = (self.now() - Duration(seconds=age)).to_msg()
        if raw is not None or compressed is not None:
            self.sent_bad.add(f'{stamp.sec}.{stamp.nanosec:09d}')
        if raw is None:
            rgb = self.images[0]
            bgr = np.ascontiguousarray(rgb[:, :, ::-1])
            raw = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='bgr8',
                        step=rgb.shape[1] * 3, data=bgr.tobytes())
        if compressed is None:
            jpeg = simplejpeg.encode_jpeg(np.ascontiguousarray(self.images[1]), colorspace='RGB')
            compressed = CompressedImage(format='jpeg', data=jpeg)
        for msg in (raw, compressed):
            msg.header.stamp = stamp
            msg.header.frame_id = 'camera'
        self.state.publish(Float32MultiArray(data=[0.05] * 8))
        self.raw.publish(raw)
        self.compressed.publish(compressed)
        return stamp

    def stream_until(self, predicate: Any, timeout: float = 15.0, **kwargs: Any) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.frames(**kwargs)
            if self.wait(predicate, 0.1):
                return True
        return predicate()

    def status(self, name: str) -> DiagnosticStatus | None:
        for array in reversed(self.got['/diagnostics']):
            for status in array.status:
                if status.name == name:
                    return status
        return None

    def wait_status(self, name: str, predicate: Any, timeout: float = 10.0,
                    stream: bool = False, **frame_args: Any) -> DiagnosticStatus:
        def check() -> bool:
            status = self.status(name)
            return status is not None and predicate(status)
        self.got['/diagnostics'].clear()
        if stream:
            ok = self.stream_until(check, timeout, **frame_args)
        else:
            ok = self.wait(check, timeout)
        assert ok, self.status(name)
        return self.status(name)

    def chunks_for(self, text: str) -> list[dict[str, str]]:
        return [info_values(s) for s in self.got['/chunk_info']
                if info_values(s)['instruction'] == text]

    def close(self) -> None:
        self.node.destroy_node()
        self.context.try_shutdown()


@pytest.fixture(scope='module')
def e2e(tmp_path_factory):
    log = tmp_path_factory.mktemp('node') / 'lightvla_node.log'
    proc = start_node(
        log, '-p', f'checkpoint:={CHECKPOINT}', '-p', 'device:=cpu', '-p', f'dt:={DT}',
        '-p', 'cpu_threads:=1',
        '-p', 'camera_types:=[raw, compressed]',
        '-p', 'camera_topics:=[camera/image_raw, wrist_camera/image_raw/compressed]',
        '-p', 'camera_timeout:=1.0', '-p', 'missing_state:=wait')
    client = Client()
    try:
        ready = client.wait(lambda: proc.poll() is not None or (
            (s := client.status('lightvla_node: model')) is not None
            and s.message == 'model ready'), LOAD_TIMEOUT)
        assert ready and proc.poll() is None, log.read_text()[-3000:]
        assert client.wait(lambda: all(p.get_subscription_count() for p in (
            client.raw, client.compressed, client.state, client.instruction)))
        yield client, proc, log
    finally:
        client.close()
        stop_process(proc)


def send_instruction(client: Client, text: str) -> None:
    assert client.wait(lambda: client.instruction.get_subscription_count() > 0)
    client.instruction.publish(String(data=text))
    expected = text if text.strip() else ''
    assert client.wait(lambda: client.got['/active_instruction']
                       and client.got['/active_instruction'][-1].data == expected)


def test_chunk_arrives_with_layout_stamps_and_trimming(e2e):
    client, proc, _ = e2e
    send_instruction(client, 'put the black bowl on the plate')
    client.got['/chunk_info'].clear()
    client.got['/action_chunk'].clear()
    sent = set()

    def received() -> bool:
        stamp = client.frames(age=0.15)
        sent.add(f'{stamp.sec}.{stamp.nanosec:09d}')
        return client.wait(lambda: client.got['/chunk_info'] and client.got['/action_chunk'], 0.2)

    deadline = time.monotonic() + 15.0
    while not received():
        assert time.monotonic() < deadline, 'no action chunk within 15 s'
    info = info_values(client.got['/chunk_info'][0])
    assert info['obs_stamp'] in sent
    trimmed = int(info['trimmed_steps'])
    elapsed = float(info['publish_stamp']) - float(info['obs_stamp'])
    assert trimmed == math.floor(elapsed / DT + 1e-9) and trimmed >= 0
    assert int(info['remaining_steps']) == 8 - trimmed
    assert info['total_tokens'] == '512' and 0 < int(info['kept_tokens']) <= 512
    assert 0.0 < float(info['keep_ratio']) <= 1.0
    chunk = client.got['/action_chunk'][0]
    assert [(d.label, d.size, d.stride) for d in chunk.layout.dim] == [('steps', 8, 56),
                                                                       ('dims', 7, 7)]
    data = np.asarray(chunk.data, dtype=np.float32)
    assert data.size == 56 and np.all(np.isfinite(data)) and np.abs(data).max() <= 1.0
    assert proc.poll() is None


def test_diagnostics_carry_pruning_statistics(e2e):
    client, _, _ = e2e
    send_instruction(client, 'put the black bowl on the plate')
    status = client.wait_status('lightvla_node: pruning',
                                lambda s: 'kept tokens mean' in info_values(s), stream=True)
    values = info_values(status)
    assert int(values['kept tokens min']) <= float(values['kept tokens mean']) \
        <= int(values['kept tokens max'])
    assert values['visual tokens total'] == '512' and values['method'] == 'lightvla'
    assert 0.0 < float(values['FLOPs saved mean (%)']) < 100.0
    assert status.hardware_id == 'cpu'
    array = client.got['/diagnostics'][-1]
    names = {s.name for s in array.status}
    assert {f'lightvla_node: {t}' for t in ('model', 'inputs', 'instruction', 'inference',
                                            'pruning', 'actions')} <= names
    inference = info_values(client.status('lightvla_node: inference'))
    assert float(inference['latency p95 (ms)']) >= float(inference['latency p50 (ms)']) > 0


def test_instruction_change_discards_the_old_task(e2e):
    client, _, _ = e2e
    send_instruction(client, 'pick up the alphabet soup')
    assert client.stream_until(lambda: client.chunks_for('pick up the alphabet soup'))
    client.got['/chunk_info'].clear()
    send_instruction(client, 'open the top drawer')
    switched = len(client.got['/chunk_info'])  # chunks already on the wire before the switch
    assert client.stream_until(lambda: len(client.chunks_for('open the top drawer')) >= 3)
    later = [info_values(s) for s in client.got['/chunk_info'][switched:]]
    first_new = next(i for i, v in enumerate(later) if v['instruction'] == 'open the top drawer')
    assert all(v['instruction'] == 'open the top drawer' for v in later[first_new:])
    epochs = [int(info_values(s)['instruction_epoch']) for s in client.got['/chunk_info']]
    assert epochs == sorted(epochs)
    # a repeat of the same text does not start a new episode
    before = epochs[-1]
    client.instruction.publish(String(data='Open the top drawer.'))
    assert client.stream_until(lambda: len(client.got['/chunk_info']) > len(epochs))
    assert int(info_values(client.got['/chunk_info'][-1])['instruction_epoch']) == before


def _assert_alive_and_working(client: Client, proc: subprocess.Popen, text: str) -> None:
    assert proc.poll() is None
    send_instruction(client, text)
    client.got['/chunk_info'].clear()
    assert client.stream_until(lambda: client.chunks_for(text), 15.0)


@pytest.mark.parametrize('case', ['encoding', 'zero_size', 'short_data', 'bad_jpeg'])
def test_bad_images_are_reported_and_never_used(e2e, case):
    client, proc, _ = e2e
    send_instruction(client, 'pick up the bowl')
    raw = compressed = None
    if case == 'encoding':
        raw = Image(height=4, width=4, encoding='no_such_encoding', step=8, data=bytes(32))
        needle = 'unsupported encoding'
    elif case == 'zero_size':
        raw = Image(height=0, width=0, encoding='rgb8', step=0, data=b'')
        needle = 'zero-size'
    elif case == 'short_data':
        raw = Image(height=64, width=64, encoding='rgb8', step=192, data=bytes(100))
        needle = 'needs'
    else:
        compressed = CompressedImage(format='jpeg', data=b'\xff\xd8 definitely not a jpeg')
        needle = 'could not be decoded'
    status = client.wait_status('lightvla_node: inputs', lambda s: needle in s.message,
                                stream=True, raw=raw, compressed=compressed)
    assert status.level[0] == 1
    _assert_alive_and_working(client, proc, 'pick up the bowl')
    assert client.sent_bad and not client.used_stamps & client.sent_bad


def test_huge_instruction_is_rejected(e2e):
    client, proc, _ = e2e
    send_instruction(client, 'pick up the bowl')
    client.instruction.publish(String(data='x' * 20000))
    assert client.wait(lambda: client.got['/active_instruction'][-1].data == '')
    status = client.wait_status('lightvla_node: instruction', lambda s: 'too long' in s.message)
    assert status.level[0] == 1
    client.got['/chunk_info'].clear()
    client.stream_until(lambda: False, timeout=0.6)
    assert len(client.got['/chunk_info']) <= 1  # at most one already in flight
    _assert_alive_and_working(client, proc, 'pick up the bowl')


def test_nan_state_is_rejected(e2e):
    client, proc, _ = e2e
    send_instruction(client, 'pick up the bowl')
    client.got['/chunk_info'].clear()

    def nan_state_frames() -> bool:
        client.state.publish(Float32MultiArray(data=[float('nan')] * 8))
        status = client.status('lightvla_node: inputs')
        return status is not None and 'NaN' in status.message

    client.got['/diagnostics'].clear()
    assert client.wait(nan_state_frames, 10.0)
    seen = len(client.got['/chunk_info'])
    for _ in range(5):  # frames without a valid state: nothing may be computed from them
        client.state.publish(Float32MultiArray(data=[float('nan')] * 8))
        client.wait(lambda: False, 0.1)
    assert len(client.got['/chunk_info']) <= seen + 1
    _assert_alive_and_working(client, proc, 'pick up the bowl')


def test_silent_camera_and_incompatible_qos_publisher(e2e):
    client, proc, _ = e2e
    status = client.wait_status('lightvla_node: inputs', lambda s: 'silent' in s.message)
    assert status.level[0] == 1
    best_effort = client.node.create_publisher(
        String, '/instruction', QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT))
    try:
        status = client.wait_status('lightvla_node: instruction',
                                    lambda s: 'BEST_EFFORT' in s.message)
        assert status.level[0] == 1 and 'RELIABLE' in status.message
    finally:
        client.node.destroy_publisher(best_effort)
    _assert_alive_and_working(client, proc, 'pick up the bowl')


def test_missing_checkpoint_is_reported_and_the_node_stays_up(e2e, tmp_path):
    client, _, _ = e2e
    proc = start_node(tmp_path / 'missing.log', '-p', f'checkpoint:={tmp_path}/nope',
                      '-r', '__node:=lightvla_missing', '-r', '__ns:=/missing')
    try:
        status = client.wait_status('lightvla_missing: model', lambda s: s.level[0] == 2, 30.0)
        assert 'does not exist' in status.message and f'{tmp_path}/nope' in status.message
        assert proc.poll() is None
    finally:
        stop_process(proc)
    assert proc.returncode == 0, (tmp_path / 'missing.log').read_text()[-2000:]

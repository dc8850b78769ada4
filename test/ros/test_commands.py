"""The `lightvla demo | instruct | monitor` subcommands (real rclpy, private domain)."""

from __future__ import annotations

import argparse
import sys
import threading

import numpy as np
import pytest
from ros_support import isolate_ros_environment, spin_until, tiny_checkpoint

isolate_ros_environment()

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from lightvla_ros.ros import commands  # noqa: E402


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='lightvla')
    commands.register(parser.add_subparsers(dest='command', required=True))
    return parser.parse_args(argv)


def test_register_adds_the_three_subcommands():
    assert parse('demo', '--checkpoint', '/x').func is commands.cmd_demo
    args = parse('instruct', 'pick up the bowl', '--timeout', '1')
    assert args.func is commands.cmd_instruct and args.text == 'pick up the bowl'
    assert parse('monitor', '--count', '2').func is commands.cmd_monitor


def test_format_status_is_readable():
    status = DiagnosticStatus(level=DiagnosticStatus.WARN, name='lightvla_node: inputs',
                              message='camera /cam silent for 3.0 s',
                              values=[KeyValue(key='camera 0 rate (Hz)', value='0.0')])
    text = commands.format_status(status)
    assert text.splitlines()[0] == '[WARN ] lightvla_node: inputs: camera /cam silent for 3.0 s'
    assert 'camera 0 rate (Hz)  0.0' in text
    assert '\n' not in commands.format_status(status, brief=True)


@pytest.fixture
def peer():
    """A node in its own context, spun by the test while a command runs in a thread."""
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node('peer', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    yield node, executor
    node.destroy_node()
    context.try_shutdown()


def run_in_thread(fn, args) -> dict:
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault('rc', fn(args)), daemon=True)
    thread.start()
    result['thread'] = thread
    return result


def test_instruct_delivers_reliably(peer, capsys):
    node, executor = peer
    received: list[String] = []
    node.create_subscription(String, '/instruction', received.append, 10)
    result = run_in_thread(commands.cmd_instruct, parse('instruct', 'open the drawer'))
    assert spin_until(executor, lambda: received and 'rc' in result, 15.0)
    assert result['rc'] == 0 and received[0].data == 'open the drawer'
    assert 'sent "open the drawer"' in capsys.readouterr().out


def test_instruct_without_subscriber_fails(capsys):
    assert commands.cmd_instruct(parse('instruct', 'x', '--topic', '/nobody_listens',
                                       '--timeout', '0.3')) == 1
    assert 'no subscriber' in capsys.readouterr().err


def test_monitor_prints_diagnostics(peer, capsys):
    node, executor = peer
    pub = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
    result = run_in_thread(commands.cmd_monitor, parse('monitor', '--count', '1',
                                                       '--duration', '15'))

    def publish_until_done() -> bool:
        array = DiagnosticArray(status=[DiagnosticStatus(
            level=DiagnosticStatus.ERROR, name='lightvla_node: model',
            message='model failed to load: checkpoint folder missing')])
        pub.publish(array)
        return 'rc' in result

    assert spin_until(executor, publish_until_done, 15.0)
    assert result['rc'] == 0
    out = capsys.readouterr().out
    assert '[ERROR] lightvla_node: model: model failed to load' in out


def test_demo_runs_for_a_bounded_time(tmp_path, capsys):
    checkpoint = tiny_checkpoint()
    if checkpoint is None:
        pytest.skip('tiny checkpoint fixture not found (set LIGHTVLA_FIXTURES)')
    import torch

    png = tmp_path / 'debug.png'
    threads = torch.get_num_threads()
    try:
        rc = commands.cmd_demo(parse('demo', '--checkpoint', str(checkpoint), '--duration', '3',
                                     '--rate', '5', '--cpu-threads', '1', '--debug-png',
                                     str(png)))
    finally:
        torch.set_num_threads(threads)  # the demo sets it process-wide
    out = capsys.readouterr().out
    assert rc == 0, out
    assert 'latency ms' in out and 'chunks; latency p50' in out
    assert png.is_file() and png.stat().st_size > 1000
    assert '[OK   ] lightvla_node: pruning' in out


def test_demo_with_missing_checkpoint(tmp_path, capsys):
    assert commands.cmd_demo(parse('demo', '--checkpoint', str(tmp_path / 'nope'))) == 2
    assert 'does not exist' in capsys.readouterr().err


def test_demo_camera_sources(tmp_path):
    from lightvla_ros.ros.demo_camera import FrameSource, synthetic_scene

    frames = FrameSource('', 2, 96).frames(1.5)
    assert [f.shape for f in frames] == [(96, 96, 3)] * 2 and frames[0].dtype.name == 'uint8'
    assert not (synthetic_scene(0.0, 0, 64) == synthetic_scene(0.0, 1, 64)).all()
    checkpoint = tiny_checkpoint()
    if checkpoint is not None:  # a folder whose files name their camera (case0_image0.png, ...)
        third, wrist = FrameSource(str(checkpoint), 2, 64).frames(0.0)
        assert third.shape == (64, 64, 3) and not (third == wrist).all()
    with pytest.raises(ValueError, match='neither a folder nor a video'):
        FrameSource(str(tmp_path / 'missing'), 2, 64)
    with pytest.raises(ValueError, match='no images'):
        FrameSource(str(tmp_path), 2, 64)


def test_demo_camera_reads_a_folder_of_images_per_camera(tmp_path):
    from PIL import Image

    from lightvla_ros.ros.demo_camera import FrameSource

    Image.new('RGB', (80, 60), (200, 40, 40)).save(tmp_path / 'case0_image0.png')
    Image.new('L', (80, 60), 90).save(tmp_path / 'case0_image1.jpg')
    third, wrist = FrameSource(str(tmp_path), 2, 32).frames(0.0)
    assert third.shape == wrist.shape == (32, 32, 3) and third.dtype.name == 'uint8'
    assert (third == (200, 40, 40)).all() and (abs(wrist.astype(int) - 90) <= 1).all()


def test_demo_camera_plays_a_video_in_a_loop(tmp_path):
    pytest.importorskip('av')
    from lightvla_ros.ros.demo_camera import FrameSource
    from lightvla_ros.training.video import encode_video

    shades = [np.full((64, 64, 3), 40 * (k + 1), np.uint8) for k in range(3)]
    video = encode_video(tmp_path / 'clip.mp4', shades, 10, codec='mpeg4')
    source = FrameSource(str(video), 2, 48)
    seen = [source.frames(0.0) for _ in range(4)]
    assert all(third.shape == wrist.shape == (48, 48, 3) for third, wrist in seen)
    means = [float(third.mean()) for third, _ in seen]
    assert means[:3] == pytest.approx([40, 80, 120], abs=6) and means[3] == pytest.approx(40, abs=6)
    (tmp_path / 'not.mp4').write_bytes(b'not a video')
    with pytest.raises(ValueError, match='cannot open video'):
        FrameSource(str(tmp_path / 'not.mp4'), 2, 48)


def test_demo_camera_compressed_frames_are_jpegs_the_node_decodes(peer):
    from rclpy.parameter import Parameter

    from lightvla_ros.ros.core.images import decode_compressed_image
    from lightvla_ros.ros.demo_camera import DemoCamera, synthetic_scene

    node, _ = peer
    camera = DemoCamera(context=node.context, parameter_overrides=[Parameter('compressed', value=True)])
    try:
        rgb = synthetic_scene(0.0, 0, 64)
        msg = camera._message(rgb, node.get_clock().now().to_msg(), 'demo_camera_0')
        assert msg.format == 'jpeg' and bytes(msg.data[:3]) == b'\xff\xd8\xff'
        assert np.abs(decode_compressed_image(msg).astype(int) - rgb).mean() < 3
    finally:
        camera.destroy_node()


def test_demo_camera_names_the_package_a_video_needs(tmp_path, monkeypatch):
    from lightvla_ros.ros.demo_camera import FrameSource

    monkeypatch.setitem(sys.modules, 'av', None)  # as if PyAV were not installed
    (tmp_path / 'clip.mp4').write_bytes(b'')
    with pytest.raises(ImportError, match=r"pip install 'lightvla_ros\[train\]'"):
        FrameSource(str(tmp_path / 'clip.mp4'), 2, 48)

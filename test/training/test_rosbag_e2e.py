"""End to end: demonstrations recorded as a rosbag2 (written here with ``rosbags``) -> ``lightvla train`` -> a
checkpoint that the policy loads and that drives ``lightvla_node`` (when rclpy is available)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from experiments.pruning_study import toy
from lightvla_ros.cli import main as cli_main
from lightvla_ros.model.tiny import make_tiny_checkpoint
from lightvla_ros.policy import LightVLAPolicy
from lightvla_ros.training.data import Episode
from lightvla_ros.training.rosbag import write_episodes_bag

REPO_ROOT = Path(__file__).resolve().parents[2]


def _base_checkpoint(tmp_path: Path) -> Path:
    """The shared oft-tiny-libero fixture (a release-layout checkpoint with the real Llama tokenizer), else a
    tiny random one in the same layout."""
    fixtures = Path(os.environ.get("LIGHTVLA_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))
    fixture = fixtures / "oft-tiny-libero"
    return fixture if (fixture / "config.json").is_file() else make_tiny_checkpoint(tmp_path / "tiny")


def _libero_like_episodes(count: int) -> list[Episode]:
    """Toy reaching demonstrations in the node's default layout: two cameras, 8-d state, 7-d actions."""
    episodes = []
    for i, e in enumerate(toy.make_episodes(count, seed=21)):
        views = np.asarray(e.images[0])
        wrist = np.ascontiguousarray(views[:, 16:48, 16:48].repeat(2, axis=1).repeat(2, axis=2))
        states = np.zeros((len(e), 8), np.float32)
        states[:, :2] = e.states
        actions = np.zeros((len(e), 7), np.float32)
        actions[:, :2] = e.actions
        actions[-1, 6] = 1.0  # the gripper closes on arrival
        episodes.append(Episode(e.instruction, [views, wrist], states, actions, f"demo{i}"))
    return episodes


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("rosbag-train")
    write_episodes_bag(tmp / "demos", _libero_like_episodes(6), storage="mcap")
    code = cli_main(["train", "--checkpoint", str(_base_checkpoint(tmp)), "--data", str(tmp / "demos"), "--out", str(tmp / "run"),
                     "--steps", "3", "--batch-size", "2", "--lora-rank", "4", "--save-every", "0", "--num-workers", "0",
                     "--device", "cpu", "--no-progress"])
    assert code == 0
    return tmp / "run" / "final"


def test_trained_checkpoint_loads_in_the_policy(trained):
    policy = LightVLAPolicy.from_checkpoint(trained, device="cpu", center_crop=True)
    assert policy.unnorm_key == "demos" and policy.num_images == 2 and policy.chunk_len == 8
    episode = _libero_like_episodes(1)[0]
    out = policy.predict([frames[0] for frames in episode.images], episode.instruction, episode.states[0])
    assert out.actions.shape == (8, 7) and np.all(np.isfinite(out.actions)) and 1 <= out.num_kept <= 512


@pytest.mark.ros
@pytest.mark.slow
def test_trained_checkpoint_drives_the_node(trained, tmp_path):
    rclpy = pytest.importorskip("rclpy", reason="rclpy not installed: the node cannot run here")
    from ros_support import isolate_ros_environment, spin_until
    from sensor_msgs.msg import Image
    from std_msgs.msg import Float32MultiArray, String

    isolate_ros_environment()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]), PYTHONUNBUFFERED="1")
    log = tmp_path / "node.log"
    with open(log, "wb") as out:
        node = subprocess.Popen([sys.executable, "-m", "lightvla_ros.ros.node", "--ros-args", "--params-file",
                                 str(REPO_ROOT / "config" / "lightvla.yaml"), "-p", f"checkpoint:={trained}", "-p", "device:=cpu",
                                 "-p", "missing_state:=wait", "-p", "warmup:=false"], cwd=REPO_ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    context = Context()
    rclpy.init(context=context)
    client = rclpy.create_node("training_e2e_client", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client)
    chunks: list = []
    client.create_subscription(Float32MultiArray, "/action_chunk", chunks.append, 10)
    cameras = [client.create_publisher(Image, topic, 5) for topic in ("/camera/image_raw", "/wrist_camera/image_raw")]
    state = client.create_publisher(Float32MultiArray, "/state", 10)
    instruction = client.create_publisher(String, "/instruction", 10)
    episode = _libero_like_episodes(1)[0]
    try:
        assert spin_until(executor, lambda: instruction.get_subscription_count() > 0 or node.poll() is not None, 60.0), log.read_text()
        deadline = time.monotonic() + 120.0
        while not chunks and time.monotonic() < deadline and node.poll() is None:
            instruction.publish(String(data=episode.instruction))
            for publisher, frames in zip(cameras, episode.images):
                rgb = np.ascontiguousarray(frames[0])
                msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3, data=rgb.tobytes())
                msg.header.stamp = client.get_clock().now().to_msg()
                publisher.publish(msg)
            state.publish(Float32MultiArray(data=episode.states[0].tolist()))
            spin_until(executor, lambda: bool(chunks), 0.5)
        assert chunks, log.read_text()[-3000:]
        dims = [(d.label, d.size) for d in chunks[0].layout.dim]
        assert dims == [("steps", 8), ("dims", 7)] and np.all(np.isfinite(chunks[0].data))
    finally:
        client.destroy_node()
        context.try_shutdown()
        if node.poll() is None:
            node.send_signal(2)
            try:
                node.wait(timeout=15)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()


@pytest.mark.slow
def test_torchrun_ddp_matches_one_process(tmp_path):
    """Two gloo processes under torchrun, 2 samples each, take the same steps as one process with 4 samples."""
    from lightvla_ros.model.checkpoint import read_safetensors
    from lightvla_ros.training.rosbag import BagConfig

    base = toy.make_toy_checkpoint(tmp_path / "base", seed=0)
    config = tmp_path / "toy.yaml"
    config.write_text("cameras: [camera/image_raw]\ninstruction: instruction\nstate: {topic: state}\nactions: [{topic: action}]\n")
    write_episodes_bag(tmp_path / "bag", toy.make_episodes(10, seed=1), config=BagConfig.load(config))
    common = ["train", "--checkpoint", str(base), "--data", str(tmp_path / "bag"), "--data-config", str(config), "--steps", "2",
              "--full", "--pruning", "none", "--device", "cpu", "--num-workers", "0", "--save-every", "0", "--save-dtype", "float32",
              "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                          "lightvla_ros.cli", *common, "--batch-size", "2", "--out", str(tmp_path / "ddp")],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert cli_main([*common, "--batch-size", "4", "--out", str(tmp_path / "single")]) == 0
    ddp = read_safetensors([tmp_path / "ddp" / "final" / "model.safetensors"])
    single = read_safetensors([tmp_path / "single" / "final" / "model.safetensors"])
    assert ddp.keys() == single.keys()
    diff = np.concatenate([np.abs(ddp[k].numpy() - single[k].numpy()).ravel() for k in ddp])
    # Adam steps ~lr, so where a gradient is ~0 its sign may differ by rounding: a few elements, by at most two steps
    assert diff.max() <= 2 * 2 * 5e-4 and (diff > 1e-6).mean() < 1e-3, (diff.max(), (diff > 1e-6).mean())
    base_weights = read_safetensors([base / "model.safetensors"])
    changed = sum(not np.array_equal(base_weights[k].numpy(), ddp[k].numpy()) for k in ddp)
    assert changed > 10  # it did train

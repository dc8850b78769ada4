"""Training data: rosbag2 and LeRobot readers, the up-front data report, chunks, statistics and augmentation."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiments.pruning_study import toy
from lightvla_ros.model.processing import Normalizer, center_crop
from lightvla_ros.training.augment import Augmentation, hsv_to_rgb, rgb_to_hsv
from lightvla_ros.training.data import DataError, DataReport, Episode, action_chunk, check_episodes, read_dataset
from lightvla_ros.training.rosbag import BagConfig, write_episodes_bag
from lightvla_ros.training.statistics import compute_statistics, default_action_mask, normalize_actions
from lightvla_ros.training.video import encode_video

TOY_BAG_CONFIG = """\
cameras: [camera/image_raw]
instruction: instruction
state: {topic: state}
actions: [{topic: action}]
gripper_dims: []
"""


def _toy_config(tmp_path: Path) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(TOY_BAG_CONFIG)
    return path


def _read(path: Path, config: Path | None, **check) -> tuple[list[Episode], DataReport]:
    report = DataReport(str(path))
    episodes = read_dataset(path, data_config=config, image_size=None, report=report)
    good = check_episodes(episodes, report, num_images=check.get("num_images", 1), state_dim=toy.STATE_DIM, action_dim=toy.ACTION_DIM,
                          skip_bad=check.get("skip_bad", False))
    return good, report


def _same(a: Episode, b: Episode) -> None:
    assert a.instruction == b.instruction
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.states, b.states)
    for t in range(len(a)):
        np.testing.assert_array_equal(np.asarray(a.images[0][t]), np.asarray(b.images[0][t]))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_rosbag_round_trip(tmp_path, storage):
    episodes = toy.make_episodes(4, seed=3)
    config = _toy_config(tmp_path)
    write_episodes_bag(tmp_path / "bag", episodes, storage=storage, config=BagConfig.load(config))
    got, report = _read(tmp_path / "bag", config)
    assert not report.errors and len(got) == len(episodes)
    for a, b in zip(episodes, got):
        _same(a, b)


def test_folder_of_bags_and_default_topics(tmp_path):
    """Without a YAML the node's default topics are used; a folder holding several bags reads them all."""
    rng = np.random.default_rng(0)
    episodes = []
    for i in range(2):
        frames = [rng.integers(0, 255, (3, 32, 40, 3), dtype=np.uint8) for _ in range(2)]
        episodes.append(Episode(f"pick up the cube {i}", frames, rng.normal(size=(3, 8)).astype(np.float32),
                                rng.normal(size=(3, 7)).astype(np.float32), f"e{i}"))
    write_episodes_bag(tmp_path / "bags" / "a", episodes[:1])
    write_episodes_bag(tmp_path / "bags" / "b", episodes[1:], storage="sqlite3")
    report = DataReport("bags")
    got = read_dataset(tmp_path / "bags", data_config=None, image_size=16, report=report)
    got = check_episodes(got, report, num_images=2, state_dim=8, action_dim=7, skip_bad=False)
    assert [e.instruction for e in got] == ["pick up the cube 0", "pick up the cube 1"]
    assert np.asarray(got[0].images[1][2]).shape == (16, 16, 3)  # resized to the model's input size at load


def test_missing_topic_is_reported_up_front(tmp_path):
    write_episodes_bag(tmp_path / "bag", toy.make_episodes(1, seed=0), config=BagConfig.load(_toy_config(tmp_path)))
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(TOY_BAG_CONFIG.replace("camera/image_raw", "front/image_raw"))
    with pytest.raises(DataError, match=r"/front/image_raw.*not recorded"):
        _read(tmp_path / "bag", wrong)


def test_bad_episodes_are_listed_then_skippable(tmp_path):
    episodes = toy.make_episodes(4, seed=1)
    episodes[1].actions[0, 0] = np.nan
    episodes[2] = Episode("reach the red cube", [np.zeros((0, 64, 64, 3), np.uint8)], np.zeros((0, toy.STATE_DIM), np.float32),
                          np.zeros((0, toy.ACTION_DIM), np.float32), "empty")
    config = _toy_config(tmp_path)
    write_episodes_bag(tmp_path / "bag", episodes, config=BagConfig.load(config))
    with pytest.raises(DataError) as info:
        _read(tmp_path / "bag", config)
    text = str(info.value)
    assert "bag#1: action has NaN/inf at frame(s) [0]" in text
    assert "bag#2: empty episode" in text
    assert "--skip-bad-episodes" in text
    got, report = _read(tmp_path / "bag", config, skip_bad=True)
    assert len(got) == 2 and len(report.bad_episodes) == 2


def test_misaligned_stamps_are_reported(tmp_path):
    """A camera that stalls after its first frame: later actions have no fresh frame; the report says so."""
    from rosbags.rosbag2 import Reader, Writer

    rng = np.random.default_rng(0)
    episodes = [Episode("reach the red cube", [rng.integers(0, 255, (6, 8, 8, 3), dtype=np.uint8)], np.zeros((6, toy.STATE_DIM), np.float32),
                        np.zeros((6, toy.ACTION_DIM), np.float32), str(i)) for i in range(2)]
    config = _toy_config(tmp_path)
    write_episodes_bag(tmp_path / "bag", episodes, config=BagConfig.load(config))
    seen = 0
    with Reader(tmp_path / "bag") as reader, Writer(tmp_path / "stalled", version=9) as writer:
        connections = {c.id: writer.add_connection(c.topic, c.msgtype, msgdef=c.msgdef.data, rihs01=c.digest) for c in reader.connections}
        for connection, stamp, raw in reader.messages():
            if connection.topic == "/camera/image_raw":
                seen += 1
                if seen % 6 != 1:
                    continue
            writer.write(connections[connection.id], stamp, raw)
    with pytest.raises(DataError, match=r"stalled#0: 4 of 6 step\(s\) dropped \(4 x /camera/image_raw older than max_stamp_gap 0.1 s\)"
                                        r" - misaligned or missing stamps"):
        _read(tmp_path / "stalled", config)


def test_compressed_camera_frames_decode_as_in_the_node(tmp_path):
    """PNG-compressed frames come back exact; an undecodable frame marks its episode bad and says which camera."""
    from rosbags.rosbag2 import Reader, Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.LATEST)
    compressed_t = typestore.types["sensor_msgs/msg/CompressedImage"]
    episodes = toy.make_episodes(2, seed=6)
    config = _toy_config(tmp_path)
    write_episodes_bag(tmp_path / "bag", episodes, config=BagConfig.load(config))
    frames = 0
    with Reader(tmp_path / "bag") as reader, Writer(tmp_path / "compressed", version=9) as writer:
        connections = {c.id: writer.add_connection(c.topic, compressed_t.__msgtype__, typestore=typestore)
                       if c.topic == "/camera/image_raw" else
                       writer.add_connection(c.topic, c.msgtype, msgdef=c.msgdef.data, rihs01=c.digest) for c in reader.connections}
        for connection, stamp, raw in reader.messages():
            if connection.topic == "/camera/image_raw":
                image = typestore.deserialize_cdr(raw, connection.msgtype)
                rgb = image.data.reshape(image.height, image.width, 3)
                data = _png(rgb) if frames != len(episodes[0]) + 2 else b"\x89PNG\r\n\x1a\n cut short"  # episode 1, step 2
                frames += 1
                raw = typestore.serialize_cdr(compressed_t(header=image.header, format="png", data=np.frombuffer(data, np.uint8)),
                                              compressed_t.__msgtype__)
            writer.write(connections[connection.id], stamp, raw)
    with pytest.raises(DataError, match=r"compressed#1: step 2: camera /camera/image_raw: compressed image \(format 'png'\) "
                                        r"could not be decoded"):
        _read(tmp_path / "compressed", config)
    got, report = _read(tmp_path / "compressed", config, skip_bad=True)
    assert len(got) == 1 and report.bad_episodes == {"compressed#1"}
    _same(episodes[0], got[0])


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_lerobot_v21(root: Path, episodes: list[Episode], embed: bool) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tasks = sorted({e.instruction for e in episodes})
    (root / "meta").mkdir(parents=True)
    features = {"observation.image": {"dtype": "image", "shape": [3, 64, 64]},
                "observation.state": {"dtype": "float32", "shape": [toy.STATE_DIM]}, "action": {"dtype": "float32", "shape": [toy.ACTION_DIM]}}
    info = {"codebase_version": "v2.1", "fps": 10, "chunks_size": 1000, "features": features,
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"}
    (root / "meta" / "info.json").write_text(json.dumps(info))
    (root / "meta" / "tasks.jsonl").write_text("\n".join(json.dumps({"task_index": i, "task": t}) for i, t in enumerate(tasks)))
    for index, episode in enumerate(episodes):
        images = []
        for t in range(len(episode)):
            if embed:
                images.append({"bytes": _png(episode.images[0][t]), "path": None})
            else:
                path = root / "images" / f"episode_{index:06d}" / f"frame_{t:06d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(episode.images[0][t]).save(path)
                images.append({"bytes": None, "path": str(path.relative_to(root))})
        table = pa.table({
            "observation.image": images,
            "observation.state": [list(map(float, s)) for s in episode.states],
            "action": [list(map(float, a)) for a in episode.actions],
            "timestamp": [t / 10 for t in range(len(episode))],
            "frame_index": list(range(len(episode))),
            "episode_index": [index] * len(episode),
            "task_index": [tasks.index(episode.instruction)] * len(episode),
        })
        path = root / "data" / "chunk-000" / f"episode_{index:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)


@pytest.mark.parametrize("embed", [True, False], ids=["images-in-parquet", "image-files"])
def test_lerobot_v21_images(tmp_path, embed):
    episodes = toy.make_episodes(3, seed=4)
    _write_lerobot_v21(tmp_path / "ds", episodes, embed)
    got, report = _read(tmp_path / "ds", None)
    assert not report.errors and len(got) == 3
    for a, b in zip(episodes, got):
        _same(a, b)


def test_lerobot_v30_video(tmp_path):
    """v3.0 layout: one data file and one MP4 per camera holding several episodes, located by from_timestamp."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    episodes = toy.make_episodes(2, seed=5)
    root = tmp_path / "ds"
    key = "observation.images.front"
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    info = {"codebase_version": "v3.0", "fps": 10, "features": {
        key: {"dtype": "video", "shape": [3, 64, 64], "info": {"video.codec": "mpeg4"}},
        "observation.state": {"dtype": "float32", "shape": [toy.STATE_DIM]}, "action": {"dtype": "float32", "shape": [toy.ACTION_DIM]}},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"}
    (root / "meta" / "info.json").write_text(json.dumps(info))
    pq.write_table(pa.table({"task_index": [0, 1], "task": [e.instruction for e in episodes]}), root / "meta" / "tasks.parquet")
    frames: list[np.ndarray] = []
    rows: dict[str, list] = {k: [] for k in ("observation.state", "action", "timestamp", "frame_index", "episode_index", "task_index")}
    starts, offset = [], 0
    for index, episode in enumerate(episodes):
        starts.append(offset / 10)
        for t in range(len(episode)):
            frames.append(episode.images[0][t])
            rows["observation.state"].append(list(map(float, episode.states[t])))
            rows["action"].append(list(map(float, episode.actions[t])))
            rows["timestamp"].append(t / 10)
            rows["frame_index"].append(t)
            rows["episode_index"].append(index)
            rows["task_index"].append(index)
        offset += len(episode)
    encode_video(root / "videos" / key / "chunk-000" / "file-000.mp4", frames, 10, codec="mpeg4")
    (root / "data" / "chunk-000").mkdir(parents=True)
    pq.write_table(pa.table(rows), root / "data" / "chunk-000" / "file-000.parquet")
    pq.write_table(pa.table({"episode_index": [0, 1], f"videos/{key}/chunk_index": [0, 0], f"videos/{key}/file_index": [0, 0],
                             f"videos/{key}/from_timestamp": starts}), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    got, report = _read(root, None)
    assert not report.errors and [e.instruction for e in got] == [e.instruction for e in episodes]
    for a, b in zip(episodes, got):
        np.testing.assert_array_equal(a.actions, b.actions)
        for t in range(len(a)):  # MPEG-4 is lossy: close, not equal
            assert np.abs(np.asarray(b.images[0][t], np.float32) - a.images[0][t]).mean() < 12


def test_action_chunks_repeat_the_last_action():
    actions = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_array_equal(action_chunk(actions, 2, 4), actions[[2, 3, 3, 3]])
    np.testing.assert_array_equal(action_chunk(actions, 0, 2), actions[[0, 1]])


def test_statistics_and_normalisation_invert_the_policy():
    rng = np.random.default_rng(0)
    episodes = [Episode("x", [], rng.normal(size=(50, 2)).astype(np.float32), rng.normal(size=(50, 3)).astype(np.float32), str(i))
                for i in range(4)]
    mask = default_action_mask(3, [-1])
    statistics = compute_statistics(episodes, "mine", mask)
    entry = statistics["mine"]
    assert entry["action"]["mask"] == [True, True, False] and entry["num_trajectories"] == 4 and entry["num_transitions"] == 200
    all_actions = np.concatenate([e.actions for e in episodes])
    np.testing.assert_allclose(entry["action"]["q01"], np.quantile(all_actions, 0.01, axis=0))
    normalizer = Normalizer.from_statistics(statistics, None)
    inside = np.clip(all_actions, entry["action"]["q01"], entry["action"]["q99"])
    np.testing.assert_allclose(normalizer.unnormalize_actions(normalize_actions(normalizer, inside)), inside, atol=1e-5)
    assert np.abs(normalize_actions(normalizer, all_actions)[:, :2]).max() <= 1.0


def test_augmentation_matches_the_reference_recipe():
    image = toy.render(toy.sample_scene(np.random.default_rng(0)), np.array([0.5, 0.5, 0.0]))
    out = Augmentation()(image, np.random.default_rng(1))
    assert out.shape == image.shape and out.dtype == np.uint8 and not np.array_equal(out, image)
    np.testing.assert_array_equal(out, Augmentation()(image, np.random.default_rng(1)))
    # with the jitter switched off, the crop is a box of the centre crop's size: the centred one can come out
    still = Augmentation(brightness=0.0, contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue=0.0)

    class Centred:
        @staticmethod
        def uniform(low, high):
            return (low + high) / 2

    np.testing.assert_allclose(still(image, Centred()).astype(int), np.asarray(center_crop(Image.fromarray(image))).astype(int), atol=1)
    rgb = np.random.default_rng(2).random((20, 20, 3))
    np.testing.assert_allclose(hsv_to_rgb(*rgb_to_hsv(rgb)), rgb, atol=1e-6)

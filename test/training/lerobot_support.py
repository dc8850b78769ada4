"""LeRobot dataset folders written the way LeRobot writes them (v3.0: several episodes per data and video file,
meta/episodes parquet; v2.1: one file per episode and camera), with frames that carry their own number."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from lightvla_ros.training.data import Episode
from lightvla_ros.training.video import encode_video

BITS, ROWS, COLUMNS = 12, 3, 4  # 8 bits of frame number and 4 of camera number, as a 3 x 4 grid of blocks
DARK, BRIGHT = 40, 215
LEROBOT_VIDEO_OPTIONS = {"libsvtav1": {"g": "2", "crf": "30"}, "libx264": {"g": "2", "crf": "23"}}  # LeRobot's encoder settings


def barcode(frame: int, camera: int = 0, size: int = 64) -> np.ndarray:
    """A frame showing ``frame`` (0-255) and ``camera`` (0-15) as big dark/bright blocks that survive lossy codecs."""
    value = (frame & 0xFF) | (camera << 8)
    image = np.empty((size, size, 3), np.uint8)
    for bit in range(BITS):
        row, column = divmod(bit, COLUMNS)
        image[row * size // ROWS:(row + 1) * size // ROWS, column * size // COLUMNS:(column + 1) * size // COLUMNS] = \
            BRIGHT if value >> bit & 1 else DARK
    return image


def read_barcode(image: np.ndarray) -> tuple[int, int]:
    """(frame, camera) shown by a :func:`barcode` image (block centres, so resizing and codec blur do not matter)."""
    height, width = image.shape[:2]
    value = 0
    for bit in range(BITS):
        row, column = divmod(bit, COLUMNS)
        y, x = (2 * row + 1) * height // (2 * ROWS), (2 * column + 1) * width // (2 * COLUMNS)
        value |= int(image[y - 2:y + 3, x - 2:x + 3].mean() > (DARK + BRIGHT) / 2) << bit
    return value & 0xFF, value >> 8


def barcode_episodes(lengths: list[int], cameras: int = 2, state_dim: int = 8, action_dim: int = 7, seed: int = 0) -> list[Episode]:
    """Episodes whose frames are numbered consecutively across episodes (frame n of the whole dataset shows n)."""
    rng = np.random.default_rng(seed)
    episodes, first = [], 0
    for index, length in enumerate(lengths):
        frames = range(first, first + length)
        images = [np.stack([barcode(n, camera) for n in frames]) for camera in range(cameras)]
        states = rng.normal(size=(length, state_dim)).astype(np.float32)
        actions = rng.uniform(-1, 1, size=(length, action_dim)).astype(np.float32)
        episodes.append(Episode(f"task number {index % 2}", images, states, actions, f"episode_{index}"))
        first += length
    return episodes


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _features(keys: list[str], episodes: list[Episode], dtype: str, codec: str, fps: int, state_key: str) -> dict:
    size = episodes[0].images[0][0].shape[0]
    codec_name = {"libsvtav1": "av1", "libx264": "h264", "libx265": "hevc"}[codec]
    camera = {"dtype": dtype, "shape": [size, size, 3], "names": ["height", "width", "channels"]}
    if dtype == "video":
        camera["info"] = {"video.height": size, "video.width": size, "video.codec": codec_name, "video.pix_fmt": "yuv420p",
                          "video.is_depth_map": False, "video.fps": fps, "video.channels": 3, "has_audio": False}
    features = {key: dict(camera) for key in keys}
    features[state_key] = {"dtype": "float32", "shape": [episodes[0].states.shape[1]], "names": None}
    features["action"] = {"dtype": "float32", "shape": [episodes[0].actions.shape[1]], "names": None}
    for name in ("timestamp",):
        features[name] = {"dtype": "float32", "shape": [1], "names": None}
    for name in ("frame_index", "episode_index", "index", "task_index"):
        features[name] = {"dtype": "int64", "shape": [1], "names": None}
    return features


def write_lerobot(root: Path, episodes: list[Episode], keys: list[str], *, version: str = "v3.0", dtype: str = "video",
                  codec: str = "libsvtav1", fps: int = 10, episodes_per_file: int = 1000, state_key: str = "observation.state") -> Path:
    """Write ``episodes`` (camera i of each episode under ``keys[i]``) as a LeRobot dataset; returns ``root``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tasks = list(dict.fromkeys(e.instruction for e in episodes))
    meta = root / "meta"
    meta.mkdir(parents=True)
    v3 = version.startswith("v3")
    info = {"codebase_version": version, "robot_type": "test", "fps": fps, "chunks_size": 1000, "total_episodes": len(episodes),
            "total_frames": sum(len(e) for e in episodes), "total_tasks": len(tasks),
            "features": _features(keys, episodes, dtype, codec, fps, state_key)}
    if v3:
        info["data_path"] = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
        info["video_path"] = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4" if dtype == "video" else None
        pq.write_table(pa.table({"task_index": list(range(len(tasks))), "__index_level_0__": tasks}), meta / "tasks.parquet")
    else:
        info["data_path"] = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
        info["video_path"] = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4" if dtype == "video" else None
        (meta / "tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(tasks)))
        (meta / "episodes.jsonl").write_text("".join(json.dumps({"episode_index": i, "tasks": [e.instruction], "length": len(e)}) + "\n"
                                                     for i, e in enumerate(episodes)))
    (meta / "info.json").write_text(json.dumps(info, indent=2))

    groups = [list(range(i, min(i + episodes_per_file, len(episodes)))) for i in range(0, len(episodes), episodes_per_file)] if v3 \
        else [[i] for i in range(len(episodes))]
    episode_rows: list[dict] = []
    index = 0
    for file_index, group in enumerate(groups):
        rows: dict[str, list] = {k: [] for k in ("action", state_key, "timestamp", "frame_index", "episode_index", "index", "task_index")}
        if dtype == "image":
            rows.update({key: [] for key in keys})
        video_start = 0.0
        for e in group:
            episode = episodes[e]
            for t in range(len(episode)):
                rows["action"].append(episode.actions[t].tolist())
                rows[state_key].append(episode.states[t].tolist())
                rows["timestamp"].append(t / fps)
                rows["frame_index"].append(t)
                rows["episode_index"].append(e)
                rows["index"].append(index)
                rows["task_index"].append(tasks.index(episode.instruction))
                index += 1
                if dtype == "image":
                    for key, frames in zip(keys, episode.images):
                        rows[key].append({"bytes": _png(frames[t]), "path": f"frame_{t:06d}.png"})
            row = {"episode_index": e, "tasks": [episode.instruction], "length": len(episode), "data/chunk_index": 0,
                   "data/file_index": file_index}
            for key in keys if dtype == "video" else []:
                row.update({f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": file_index,
                            f"videos/{key}/from_timestamp": video_start, f"videos/{key}/to_timestamp": video_start + len(episode) / fps})
            video_start += len(episode) / fps
            episode_rows.append(row)
        schema = {"timestamp": pa.float32()}
        table = pa.table({k: pa.array(v, type=schema.get(k)) for k, v in rows.items()})
        data = root / (info["data_path"].format(chunk_index=0, file_index=file_index) if v3 else
                       info["data_path"].format(episode_chunk=0, episode_index=group[0]))
        data.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, data)
        if dtype == "video":
            for camera, key in enumerate(keys):
                frames = [frame for e in group for frame in episodes[e].images[camera]]
                path = (info["video_path"].format(video_key=key, chunk_index=0, file_index=file_index) if v3 else
                        info["video_path"].format(episode_chunk=0, video_key=key, episode_index=group[0]))
                encode_video(root / path, frames, fps, codec, **LEROBOT_VIDEO_OPTIONS[codec])
    if v3:
        (meta / "episodes" / "chunk-000").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(episode_rows), meta / "episodes" / "chunk-000" / "file-000.parquet")
    return root

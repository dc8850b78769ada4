#!/usr/bin/env python3
"""Video decoding speed for LeRobot datasets: ``python benchmarks/video_decode.py [--frames N]``.

Encodes the demo camera's tabletop scene with LeRobot's encoder settings (AV1 through libsvtav1, and H.264 and
HEVC for comparison; a key frame every 2 frames) at 640x480 and 256x256, plain (smooth, compresses well) and with
a moving noise texture (the hard case for a decoder), then times, in frames per second: decoding alone, decoding
to RGB as the training reader does (:func:`lightvla_ros.training.video.decode_at`), and that plus the resize to
224 px and PNG compression the reader keeps frames in (one thread).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightvla_ros.ros.demo_camera import synthetic_scene  # noqa: E402
from lightvla_ros.training.data import EncodedFrames  # noqa: E402
from lightvla_ros.training.video import decode_at, encode_video  # noqa: E402

FPS = 30
CODECS = {"av1 (libsvtav1)": ("libsvtav1", {"g": "2", "crf": "30"}),  # LeRobot's defaults
          "h264 (libx264)": ("libx264", {"g": "2", "crf": "23"}),
          "hevc (libx265)": ("libx265", {"g": "2", "crf": "28", "x265-params": "log-level=error"})}


def scene(index: int, height: int, width: int, texture: np.ndarray | None) -> np.ndarray:
    from PIL import Image

    frame = np.asarray(Image.fromarray(synthetic_scene(index / FPS, 0, 256)).resize((width, height),
                                                                                   Image.Resampling.BILINEAR))
    if texture is None:
        return frame
    dx, dy = int(40 + 30 * np.sin(index / 20)), int(40 + 20 * np.cos(index / 25))  # a slow camera pan
    return np.clip(frame + texture[dy:dy + height, dx:dx + width], 0, 255).astype(np.uint8)


def best_rate(count: int, run, repeats: int = 2) -> float:
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = max(best, count / (time.perf_counter() - start))
    return best


def main() -> int:
    import av
    from PIL import Image

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    os.environ.setdefault("SVT_LOG", "1")
    texture = np.random.default_rng(0).normal(0, 12, (600, 800, 3))
    times = [i / FPS for i in range(args.frames)]

    def decode_only(path: Path) -> None:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for _ in container.decode(stream):
                pass

    def to_model(rgb: np.ndarray) -> bytes:
        return EncodedFrames.encode(np.asarray(Image.fromarray(rgb).resize((224, 224), Image.BICUBIC)))

    print(f"PyAV {av.__version__}, FFmpeg libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))}, "
          f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}")
    print(f"{'codec':<16} {'size':>8} {'content':>9} {'kB/frame':>9} {'decode':>7} {'to RGB':>7} {'+224 PNG':>9}  (frames/s)")
    with tempfile.TemporaryDirectory() as folder:
        for height, width in ((480, 640), (256, 256)):
            for content in ("smooth", "textured"):
                frames = [scene(i, height, width, texture if content == "textured" else None) for i in range(args.frames)]
                for name, (codec, options) in CODECS.items():
                    path = encode_video(Path(folder) / f"{codec}.mp4", frames, FPS, codec, **options)
                    rates = [best_rate(args.frames, lambda: decode_only(path)),
                             best_rate(args.frames, lambda: decode_at(path, times, FPS)),
                             best_rate(args.frames, lambda: decode_at(path, times, FPS, to_model))]
                    print(f"{name:<16} {f'{width}x{height}':>8} {content:>9} {path.stat().st_size / args.frames / 1e3:9.1f} "
                          f"{rates[0]:7.0f} {rates[1]:7.0f} {rates[2]:9.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

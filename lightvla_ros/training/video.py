"""Frame-exact video decoding with PyAV, whose wheels bundle FFmpeg with the dav1d AV1 decoder.

LeRobot encodes its videos in AV1 by default; H.264 and HEVC also occur in public datasets. A frame is found by
its presentation time: the frame shown within a quarter of a frame period of the requested time, never merely
the nearest decoded one, so a missing or shifted frame is an error instead of silent label noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np

from lightvla_ros.training.data import DataError

TOLERANCE_PERIODS = 0.25  # frames closer than a quarter period to a requested time are that frame
Converted = TypeVar("Converted")


def decode_at(path: Path, times: Sequence[float], fps: float,
              convert: Callable[[np.ndarray], Converted] = lambda rgb: rgb) -> list[Converted]:
    """``convert`` of each RGB uint8 frame of ``path`` presented at ``times`` (seconds, any order, repeats allowed).

    ``convert`` (e.g. resize and compress) runs as each frame is decoded, so an episode is never held decoded.
    Seeks to the key frame at or before the earliest time and decodes forward to the latest, so reading one
    episode of a file that holds many costs about one episode plus a group of pictures. Raises
    :class:`DataError` when the file cannot be decoded or a requested frame is absent.
    """
    import av

    if not times:
        return []
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    tolerance = TOLERANCE_PERIODS / fps
    order = np.argsort(np.asarray(times, dtype=np.float64), kind="stable")
    found: list[Converted | None] = [None] * len(times)
    next_wanted, last_seen = 0, None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            codec = stream.codec_context.name
            first = float(times[order[0]]) - tolerance
            container.seek(max(0, int(first / stream.time_base)), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                shown = float(frame.time)
                last_seen = shown
                while next_wanted < len(order) and times[order[next_wanted]] < shown - tolerance:
                    next_wanted += 1  # that time has passed without a frame: stays None
                if next_wanted == len(order):
                    break
                if abs(times[order[next_wanted]] - shown) <= tolerance:
                    converted = convert(frame.to_ndarray(format="rgb24"))
                    while next_wanted < len(order) and abs(times[order[next_wanted]] - shown) <= tolerance:
                        found[order[next_wanted]] = converted
                        next_wanted += 1
    except av.FFmpegError as exc:
        raise DataError(f"{path}: cannot decode ({exc})") from exc
    missing = [float(times[i]) for i in range(len(times)) if found[i] is None]
    if missing:
        seen = "no frame decoded" if last_seen is None else f"decoding reached {last_seen:.3f} s"
        raise DataError(f"{path}: no frame at {len(missing)} of {len(times)} requested time(s), first {missing[0]:.3f} s "
                        f"({seen}; codec {codec}, {fps:g} fps)")
    return found  # type: ignore[return-value]


def encode_video(path: Path, frames: Sequence[np.ndarray], fps: int, codec: str = "libsvtav1", **options: str) -> Path:
    """Write RGB uint8 frames as an MP4 (yuv420p), as LeRobot does (``libsvtav1``; also ``libx264``, ``libx265``).

    Used by the tests and to turn image sequences into compact datasets.
    """
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
        container.mux(stream.encode())
    return path

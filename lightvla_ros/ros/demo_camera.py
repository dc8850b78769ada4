"""``lightvla_demo_camera``: camera frames (and a robot state) for machines without a camera.

Publishes one stream per entry of ``camera_topics``: synthetic tabletop scenes (default), the
images of a folder, or the frames of a video file (read with PyAV, from the ``train`` extra).
Frames are stamped with the node clock, so the inference node's staleness checks and chunk stamps
behave as with a real camera. With ``publish_state`` it also publishes a slowly varying
``std_msgs/Float32MultiArray`` state for checkpoints that need proprio. Drawing, image files and
JPEG output use Pillow and simplejpeg: the package needs no OpenCV.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import simplejpeg
from PIL import Image as PILImage
from PIL import ImageDraw
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float32MultiArray

from lightvla_ros.ros.core.images import encode_rgb_fields, rgb8_from_pillow
from lightvla_ros.ros.entry import spin_node

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp')


def synthetic_scene(t: float, camera: int, size: int) -> np.ndarray:
    """A tabletop with a bowl, a plate and blocks that drift slowly; camera 1+ is a wrist view."""
    img = np.empty((size, size, 3), np.uint8)
    img[:] = np.linspace(200, 120, size, dtype=np.uint8)[:, None, None]
    table_top = size // 3
    img[table_top:] = (150, 110, 70)
    s = size / 256.0
    objects = [((70 + 20 * math.sin(0.5 * t), 150), 28, (20, 20, 20), 'bowl'),
               ((170, 160 + 10 * math.cos(0.4 * t)), 34, (230, 230, 230), 'plate'),
               ((120 + 30 * math.cos(0.3 * t), 200), 16, (200, 40, 40), 'block'),
               ((210, 110 + 15 * math.sin(0.6 * t)), 14, (40, 80, 210), 'block')]
    if camera > 0:  # wrist view: zoomed on the bowl, with the gripper fingers in front
        cx, cy = objects[0][0]
        zoom = 2.2
        objects = [(((x - cx) * zoom + 128, (y - cy) * zoom + 150), r * zoom, c, k)
                   for (x, y), r, c, k in objects]
    image = PILImage.fromarray(img)
    draw = ImageDraw.Draw(image)
    for (x, y), radius, colour, kind in objects:
        cx, cy = int(x * s), int(y * s)
        r = max(2, int(radius * s))
        if kind == 'block':
            draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
        else:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
            if kind == 'bowl':
                inner = max(1, int(r * 0.7))
                draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=(70, 70, 70))
    if camera > 0:
        finger = (60, 60, 60)
        draw.rectangle((int(60 * s), int(200 * s), int(90 * s), size - 1), fill=finger)
        draw.rectangle((int(166 * s), int(200 * s), int(196 * s), size - 1), fill=finger)
    return np.array(image)


def _resized(rgb: np.ndarray, size: int) -> np.ndarray:
    return np.array(PILImage.fromarray(rgb).resize((size, size), PILImage.Resampling.BILINEAR))


class _VideoFrames:
    """The RGB frames of a video file, from the start again after the last."""

    def __init__(self, path: Path) -> None:
        try:
            import av
        except ImportError as exc:
            raise ImportError("a video source needs PyAV: pip install 'lightvla_ros[train]' "
                              '(or pip install av)') from exc
        try:
            self._container = av.open(str(path))
        except av.FFmpegError as exc:
            raise ValueError(f'cannot open video {path} ({exc})') from exc
        if not self._container.streams.video:
            self._container.close()
            raise ValueError(f'cannot open video {path}: it has no video stream')
        self._stream = self._container.streams.video[0]
        self._frames = self._container.decode(self._stream)

    def next(self) -> np.ndarray:
        frame = next(self._frames, None)
        if frame is None:
            self._container.seek(0, stream=self._stream)
            self._frames = self._container.decode(self._stream)
            frame = next(self._frames, None)
        if frame is None:
            raise ValueError('the video yields no frames')
        return frame.to_ndarray(format='rgb24')


class FrameSource:
    """Frames for each camera from a folder, a video or the synthetic scene."""

    def __init__(self, source: str, num_cameras: int, size: int) -> None:
        self.size = size
        self.num_cameras = num_cameras
        self._files: list[list[Path]] = []
        self._video: _VideoFrames | None = None
        self._index = 0
        if not source:
            return
        path = Path(source).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ValueError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in {path}')
            for k in range(num_cameras):
                own = [p for p in files if f'image{k}' in p.stem]
                self._files.append(own or files)
        elif path.is_file():
            self._video = _VideoFrames(path)
        else:
            raise ValueError(f'source {path} is neither a folder nor a video file')

    def frames(self, t: float) -> list[np.ndarray]:
        """One RGB frame per camera for time ``t`` (seconds since start)."""
        if self._files:
            out = []
            for files in self._files:
                with PILImage.open(files[self._index % len(files)]) as image:
                    out.append(_resized(rgb8_from_pillow(image), self.size))
            self._index += 1
            return out
        if self._video is not None:
            rgb = _resized(self._video.next(), self.size)
            h = self.size
            wrist = _resized(rgb[h // 4:3 * h // 4, h // 4:3 * h // 4], h)
            return [rgb] + [wrist] * (self.num_cameras - 1)
        return [synthetic_scene(t, k, self.size) for k in range(self.num_cameras)]


class DemoCamera(Node):
    """Publishes demo camera frames at ``rate`` Hz on ``camera_topics``."""

    def __init__(self, *, context: Any = None, node_name: str = 'lightvla_demo_camera',
                 parameter_overrides: list | None = None) -> None:
        super().__init__(node_name, context=context, parameter_overrides=parameter_overrides)

        def declare(name: str, default: Any, description: str) -> Any:
            return self.declare_parameter(
                name, default, ParameterDescriptor(description=description, read_only=True)).value

        topics = declare('camera_topics', ['camera/image_raw', 'wrist_camera/image_raw'],
                         'Topics to publish, one per camera (third-person first).')
        rate = declare('rate', 10.0, 'Frames per second per camera.')
        size = declare('size', 256, 'Width and height of the frames (pixels).')
        source = declare('source', '', 'Empty: synthetic scenes; a folder of images; or a video '
                         'file.')
        self._encoding = declare('encoding', 'rgb8', 'rgb8 or bgr8 (raw frames).')
        self._compressed = declare('compressed', False, 'Publish sensor_msgs/CompressedImage '
                                   '(JPEG) instead of raw images.')
        publish_state = declare('publish_state', True, 'Also publish a robot state vector.')
        state_topic = declare('state_topic', 'state', 'Topic of the state vector.')
        self._state_dim = declare('state_dim', 8, 'Length of the state vector (LIBERO: 8).')
        self._frame_ids = [f'demo_camera_{k}' for k in range(len(topics))]
        self._source = FrameSource(source, len(topics), int(size))
        overrides = QoSOverridingOptions.with_default_policies()
        msg_type = CompressedImage if self._compressed else Image
        self._pubs = [self.create_publisher(msg_type, topic, QoSProfile(depth=5),
                                            qos_overriding_options=overrides)
                      for topic in topics]
        self._state_pub = (self.create_publisher(Float32MultiArray, state_topic, 10,
                                                 qos_overriding_options=overrides)
                           if publish_state else None)
        self._start = self.get_clock().now()
        self.frames_published = 0
        self._timer = self.create_timer(1.0 / max(0.1, float(rate)), self._tick)
        self.get_logger().info(
            f"publishing {'synthetic' if not source else source} frames on {list(topics)} "
            f'at {rate} Hz')

    def _tick(self) -> None:
        now = self.get_clock().now()
        t = (now - self._start).nanoseconds * 1e-9
        stamp = now.to_msg()
        for k, (pub, rgb) in enumerate(zip(self._pubs, self._source.frames(t))):
            pub.publish(self._message(rgb, stamp, self._frame_ids[k]))
        if self._state_pub is not None:
            state = 0.1 * np.sin(0.3 * t + np.arange(self._state_dim, dtype=np.float32))
            self._state_pub.publish(Float32MultiArray(data=state.astype(np.float32)))
        self.frames_published += 1

    def _message(self, rgb: np.ndarray, stamp: Any, frame_id: str) -> Any:
        if self._compressed:  # quality 95 and 4:2:0, as OpenCV's defaults gave before
            jpeg = simplejpeg.encode_jpeg(np.ascontiguousarray(rgb), quality=95, colorspace='RGB',
                                          colorsubsampling='420')
            msg = CompressedImage(format='jpeg', data=jpeg)
        else:
            fields = encode_rgb_fields(rgb)
            if self._encoding == 'bgr8':
                bgr = np.ascontiguousarray(rgb[:, :, ::-1])
                fields.update(encoding='bgr8', data=bgr.tobytes())
            msg = Image(**fields)
        msg.header.stamp = stamp
        msg.header.frame_id = frame_id
        return msg


def main(args: list[str] | None = None) -> None:
    """Entry point of ``lightvla_demo_camera``."""
    spin_node(DemoCamera, args)


if __name__ == '__main__':
    main()

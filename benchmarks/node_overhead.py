"""What ``lightvla_node`` adds on top of the model: camera message arrival -> action chunk publication.

The node runs in its own process (as ``ros2 run`` starts it) on a private ROS domain restricted to this host.
This process plays two 640x480 rgb8 cameras at 30 Hz, the robot state and the instruction, and reads every
``chunk_info``, whose fields give the camera stamps the chunk was computed from, the node's publication stamp
and the model's own time (``latency_ms``, the wall time of ``policy.predict``). Per chunk:

    arrival   = newest camera stamp of the frame set + loopback transport time (measured separately)
    overhead  = publication - arrival - model time            (what the issue asks for)
    wait      = max(arrival, previous publication) - arrival  (the frame waited for the busy worker)
    node work = overhead - wait                               (callbacks, matching, decoding, publishing)

When the model is slower than the camera, a used frame has usually waited for the previous inference to end
(up to one frame period); that wait is inherent to any newest-frame pipeline, so it is reported apart. A second
phase sends one frame pair at a time to an idle node, which isolates the node's own work. Backlog shows as a
trend of the per-chunk latency over the run; dropped frames come from the node's own camera counters.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import Summary

CAMERA_TOPICS = ("/camera/image_raw", "/wrist_camera/image_raw")
PROBE_TOPIC = "/lightvla_bench/probe"
LOAD_TIMEOUT_S = 300.0
IDLE_PERIOD_S = 0.1  # shortest frame period of the idle phase; it is also at least twice the model time

# Fast DDS's default shared-memory segment (512 KiB) cannot hold a 640x480 rgb8 frame (900 KiB), so such frames
# fall back to UDP loopback, where best-effort samples get lost. This profile enlarges the segment (16 MiB).
LARGE_SHM_PROFILE = """<?xml version="1.0" encoding="UTF-8" ?>
<profiles xmlns="http://www.eprosima.com">
  <transport_descriptors>
    <transport_descriptor><transport_id>shm_16mib</transport_id><type>SHM</type><segment_size>16777216</segment_size></transport_descriptor>
    <transport_descriptor><transport_id>udp</transport_id><type>UDPv4</type></transport_descriptor>
  </transport_descriptors>
  <participant profile_name="lightvla_bench" is_default_profile="true">
    <rtps>
      <userTransports><transport_id>shm_16mib</transport_id><transport_id>udp</transport_id></userTransports>
      <useBuiltinTransports>false</useBuiltinTransports>
    </rtps>
  </participant>
</profiles>
"""


def isolate_environment(domain: int) -> None:
    """Private domain, discovery on this host only; set before rclpy starts (children inherit it)."""
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_LOCALHOST_ONLY"] = "1"
    os.environ.pop("ROS_STATIC_PEERS", None)


def _seconds(text: str) -> float:
    sec, _, nanosec = text.partition(".")
    return int(sec) + int(nanosec or 0) * 1e-9


@dataclass
class Chunk:
    """One chunk_info as received: the frame stamps it used, its publication stamp and the model time."""

    camera_stamps: list[float]
    publish: float
    model_s: float
    received: float

    @classmethod
    def parse(cls, values: dict[str, str], received: float) -> "Chunk":
        return cls([_seconds(s) for s in values["camera_stamps"].split()], _seconds(values["publish_stamp"]),
                   float(values["latency_ms"]) / 1e3, received)


@dataclass
class Phase:
    chunks: list[Chunk] = field(default_factory=list)
    frames_sent: int = 0
    counters_before: dict[str, int] = field(default_factory=dict)
    counters_after: dict[str, int] = field(default_factory=dict)


class Client:
    """This process's side: camera, state and instruction publishers, chunk_info and diagnostics readers."""

    def __init__(self, camera_shape: tuple[int, int], seed: int) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from std_msgs.msg import Float32MultiArray, String

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("lightvla_node_bench", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.cameras = [self.node.create_publisher(Image, t, qos_profile_sensor_data) for t in CAMERA_TOPICS]
        self.probe = self.node.create_publisher(Image, PROBE_TOPIC, qos_profile_sensor_data)
        self.state = self.node.create_publisher(Float32MultiArray, "/state", qos_profile_sensor_data)
        self.instruction = self.node.create_publisher(String, "/instruction", 10)
        self.string_type = String
        self.chunks: list[Chunk] = []
        self.active: list[str] = []
        self.status: dict[str, Any] = {}
        self.probe_delays: list[float] = []
        self.node.create_subscription(DiagnosticStatus, "/chunk_info", self._on_chunk, 100)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 20)
        self.node.create_subscription(String, "/active_instruction", lambda m: self.active.append(m.data), 10)
        self.node.create_subscription(Image, PROBE_TOPIC, self._on_probe, qos_profile_sensor_data)
        rng = np.random.default_rng(seed)
        height, width = camera_shape
        self.images = []
        for _ in CAMERA_TOPICS:  # built once: only the stamp changes per frame, as with a camera driver
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            self.images.append(Image(height=height, width=width, encoding="rgb8", step=width * 3, data=pixels.tobytes()))
        self.state_msg = Float32MultiArray(data=[0.0] * 8)

    def _on_chunk(self, msg: Any) -> None:
        self.chunks.append(Chunk.parse({kv.key: kv.value for kv in msg.values}, time.time()))

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            self.status[status.name] = status

    def _on_probe(self, msg: Any) -> None:
        self.probe_delays.append(time.time() - (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9))

    def now_msg(self) -> Any:
        return self.node.get_clock().now().to_msg()

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.executor.spin_once(timeout_sec=min(left, 0.005))

    def wait(self, predicate: Any, timeout: float) -> bool:
        from lightvla_ros.ros.entry import spin_until  # rclpy is imported only once a node overhead run starts

        return spin_until(self.executor, predicate, timeout)

    def send_frames(self) -> None:
        """The state, then each camera stamped just before it is published (as each camera driver would)."""
        self.state.publish(self.state_msg)
        for publisher, image in zip(self.cameras, self.images):
            image.header.stamp = self.now_msg()
            publisher.publish(image)

    def stream(self, seconds: float, rate: float) -> int:
        """Publish frame pairs at ``rate`` Hz on a fixed schedule while handling incoming messages."""
        period, sent = 1.0 / rate, 0
        start = time.monotonic()
        next_at = start
        while time.monotonic() - start < seconds:
            if time.monotonic() >= next_at:
                self.send_frames()
                sent += 1
                next_at += period
            self.executor.spin_once(timeout_sec=max(0.0, min(next_at - time.monotonic(), 0.005)))
        return sent

    def measure_transport(self, count: int, rate: float) -> list[float]:
        """Loopback delivery time of one camera-sized message (publish stamp -> callback here)."""
        self.probe_delays.clear()
        image = self.images[0]
        for _ in range(count):
            image.header.stamp = self.now_msg()
            self.probe.publish(image)
            self.spin_for(1.0 / rate)
        self.spin_for(0.2)
        return list(self.probe_delays)

    def camera_counters(self) -> dict[str, int]:
        status = self.status.get("lightvla_node: inputs")
        if status is None:
            return {}
        out = {}
        for kv in status.values:
            if kv.key.startswith("camera ") and kv.key.split(" ", 2)[-1] in ("received", "used", "dropped", "stale", "lost messages"):
                out[kv.key] = int(kv.value)
        return out

    def close(self) -> None:
        self.node.destroy_node()
        self.context.try_shutdown()


def start_node(checkpoint: Path, threads: int, log: Path) -> subprocess.Popen:
    repo = Path(__file__).resolve().parents[2]
    params = repo / "config" / "lightvla.yaml"
    cmd = [sys.executable, "-m", "lightvla_ros.ros.node", "--ros-args"]
    if params.is_file():
        cmd += ["--params-file", str(params)]
    for name, value in (("checkpoint", str(checkpoint)), ("device", "cpu"), ("center_crop", "false"),
                        ("debug_image", "false"), ("cpu_threads", str(threads)), ("dt", "0.05")):
        cmd += ["-p", f"{name}:={value}"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop_node(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def analyse(phase: Phase, transport_s: float) -> dict[str, Any]:
    """Per-chunk overhead, its wait / node-work split, the latency trend and the frame counters."""
    chunks = sorted(phase.chunks, key=lambda c: c.publish)
    if not chunks:
        return {"chunks": 0}
    overhead, wait, work, model, e2e, times = [], [], [], [], [], []
    previous = None
    for chunk in chunks:
        arrival = max(chunk.camera_stamps) + transport_s
        eligible = arrival if previous is None else max(arrival, previous)
        total = chunk.publish - arrival - chunk.model_s
        overhead.append(total * 1e3)
        wait.append((eligible - arrival) * 1e3)
        work.append((chunk.publish - eligible - chunk.model_s) * 1e3)
        model.append(chunk.model_s * 1e3)
        e2e.append((chunk.publish - arrival) * 1e3)
        times.append(chunk.publish - chunks[0].publish)
        previous = chunk.publish
    span = times[-1] if times[-1] > 0 else 1.0
    slope = float(np.polyfit(times, e2e, 1)[0]) if len(chunks) >= 3 else 0.0
    half = len(e2e) // 2
    counters = {k: phase.counters_after.get(k, 0) - phase.counters_before.get(k, 0) for k in phase.counters_after}
    return {
        "chunks": len(chunks),
        "chunk_rate_hz": (len(chunks) - 1) / span,
        "frame_pairs_sent": phase.frames_sent,
        "overhead_ms": Summary.of(overhead).as_dict(),
        "wait_ms": Summary.of(wait).as_dict(),
        "node_work_ms": Summary.of(work).as_dict(),
        "model_ms": Summary.of(model).as_dict(),
        "arrival_to_publication_ms": Summary.of(e2e).as_dict(),
        "latency_trend_ms_per_s": slope,
        "latency_first_half_median_ms": float(np.median(e2e[:half])) if half else None,
        "latency_second_half_median_ms": float(np.median(e2e[half:])) if half else None,
        "delivery_ms": Summary.of([(c.received - c.publish) * 1e3 for c in chunks]).as_dict(),
        "camera_counters": counters,
    }


def run_node_benchmark(args: argparse.Namespace) -> int:
    """``python -m benchmarks --node``: stream, then idle-trigger, then write JSON and Markdown."""
    from benchmarks.report import load_average, machine_info

    if args.node_domain is None:
        args.node_domain = 150 + os.getpid() % 80
    isolate_environment(args.node_domain)
    if importlib.util.find_spec("rclpy") is None:
        print("python -m benchmarks --node needs rclpy: source ROS 2 or `pip install .[ros]`", file=sys.stderr)
        return 2
    import torch

    workdir = Path(tempfile.mkdtemp(prefix="lightvla-node-bench-"))
    if args.node_dds == "large-shm":
        profile = workdir / "fastdds_large_shm.xml"
        profile.write_text(LARGE_SHM_PROFILE)
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    checkpoint = Path(args.checkpoint) if args.checkpoint else _tiny_checkpoint(workdir / "tiny", args.seed)
    camera_shape = args.camera
    threads = args.threads or 0  # 0: the node's default (torch picks the thread count)
    log = workdir / "lightvla_node.log"
    proc = start_node(checkpoint, threads, log)
    client = Client(camera_shape, args.seed)
    progress = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        progress(f"node starting (ROS_DOMAIN_ID={args.node_domain}, log {log}) ...")
        transport = client.measure_transport(int(args.node_rate * 2), args.node_rate)
        transport_s = float(np.median(transport)) if transport else 0.0
        ready = client.wait(lambda: proc.poll() is not None or (
            (s := client.status.get("lightvla_node: model")) is not None and s.message == "model ready"), LOAD_TIMEOUT_S)
        if not ready or proc.poll() is not None:
            raise RuntimeError(f"the node did not become ready; its log:\n{log.read_text()[-3000:]}")
        if not client.wait(lambda: all(p.get_subscription_count() for p in (*client.cameras, client.instruction)), 30.0):
            raise RuntimeError("the node did not subscribe to the camera and instruction topics")
        client.instruction.publish(client.string_type(data=args.instruction))
        if not client.wait(lambda: args.instruction.lower() in [a.lower() for a in client.active], 10.0):
            raise RuntimeError("the node did not accept the instruction")
        progress("warming up ...")
        client.stream(3.0, args.node_rate)
        streaming = Phase(counters_before=client.camera_counters())
        client.chunks.clear()
        progress(f"streaming two {camera_shape[1]}x{camera_shape[0]} cameras at {args.node_rate:g} Hz for {args.node_seconds:g} s ...")
        streaming.frames_sent = client.stream(args.node_seconds, args.node_rate)
        client.spin_for(1.5)  # let the last chunk and a diagnostics update arrive
        streaming.chunks, streaming.counters_after = list(client.chunks), client.camera_counters()
        idle = Phase(counters_before=client.camera_counters())
        client.chunks.clear()
        models = [c.model_s for c in streaming.chunks]
        period = max(IDLE_PERIOD_S, 2.0 * float(np.median(models)) if models else IDLE_PERIOD_S)
        chunks_wanted = max(10, int(args.node_seconds))
        progress(f"idle node: frame pairs every {period * 1e3:.0f} ms (longer than an inference) ...")
        idle.frames_sent = client.stream(chunks_wanted * period, 1.0 / period)
        client.spin_for(1.5)
        idle.chunks, idle.counters_after = list(client.chunks), client.camera_counters()
    finally:
        client.close()
        stop_node(proc)
    result = {
        "schema": "lightvla-node-bench/1",
        "machine": machine_info(torch.device("cpu")),
        "run": {"checkpoint": str(checkpoint), "camera_shape": list(camera_shape), "rate_hz": args.node_rate,
                "seconds": args.node_seconds, "node_cpu_threads": threads, "ros_domain_id": args.node_domain,
                "dds": args.node_dds, "rmw": os.environ.get("RMW_IMPLEMENTATION", "default (rmw_fastrtps_cpp)"),
                "load_average": load_average()},
        "transport_ms": Summary.of([t * 1e3 for t in transport]).as_dict() if transport else None,
        "streaming": analyse(streaming, transport_s),
        "idle": analyse(idle, transport_s),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.name or "bench-node"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    text = node_markdown(result)
    (args.out / f"{stem}.md").write_text(text)
    if not args.quiet:
        print(text)
    print(f"wrote {args.out / (stem + '.json')}, {args.out / (stem + '.md')}", file=sys.stderr)
    return 0


def _tiny_checkpoint(folder: Path, seed: int) -> Path:
    from lightvla_ros.model.tiny import make_tiny_checkpoint

    return make_tiny_checkpoint(folder, seed=seed)


def node_markdown(result: dict[str, Any]) -> str:
    run, m = result["run"], result["machine"]
    transport = result["transport_ms"]
    lines = [f"## lightvla_node overhead: two {run['camera_shape'][1]}x{run['camera_shape'][0]} rgb8 cameras at {run['rate_hz']:g} Hz",
             "", f"{m['cpu']} ({m['cpu_count']} cores), torch {m['torch']}; node in its own process, cpu_threads "
             f"{run['node_cpu_threads']} (0 = torch's default); DDS settings: {run['dds']}; checkpoint {run['checkpoint']}; "
             f"load average {run['load_average']}.",
             f"Loopback transport of one camera message (subtracted from arrival): "
             f"{transport['median']:.2f} ms median [{transport['p10']:.2f}-{transport['p90']:.2f}]." if transport else "",
             "", "| phase | chunks | chunk Hz | model ms | arrival -> publication ms | overhead ms (= minus model) | "
             "of which wait for busy worker | of which node work | latency trend ms/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, label in (("streaming", f"streaming {run['seconds']:g} s"), ("idle", "idle node (frame period > inference)")):
        a = result[name]
        if not a.get("chunks"):
            lines.append(f"| {label} | 0 | - | - | - | - | - | - | - |")
            continue

        def cell(key: str) -> str:
            s = a[key]
            return f"{s['median']:.2f} [{s['p10']:.2f}-{s['p90']:.2f}]"

        lines.append(f"| {label} | {a['chunks']} | {a['chunk_rate_hz']:.1f} | {cell('model_ms')} | {cell('arrival_to_publication_ms')} | "
                     f"{cell('overhead_ms')} | {cell('wait_ms')} | {cell('node_work_ms')} | {a['latency_trend_ms_per_s']:+.2f} |")
    s = result["streaming"]
    if s.get("chunks"):
        c = s["camera_counters"]
        sent = s["frame_pairs_sent"]
        per_camera = [f"camera {i}: sent {sent}, received {c.get(f'camera {i} received', 0)}, used {c.get(f'camera {i} used', 0)}, "
                      f"dropped (replaced before use) {c.get(f'camera {i} dropped', 0)}, stale {c.get(f'camera {i} stale', 0)}, "
                      f"lost (QoS) {c.get(f'camera {i} lost messages', 0)}" for i in range(len(CAMERA_TOPICS))]
        lines += ["", "Streaming frame accounting (node counters over the measured window): " + "; ".join(per_camera) + ".",
                  f"Backlog: arrival-to-publication median {s['latency_first_half_median_ms']:.1f} ms in the first half of the run, "
                  f"{s['latency_second_half_median_ms']:.1f} ms in the second (trend {s['latency_trend_ms_per_s']:+.2f} ms/s); "
                  f"chunk_info delivery {s['delivery_ms']['median']:.2f} ms median."]
    return "\n".join(lines) + "\n"

"""``lightvla eval-libero`` and the ``lightvla_libero_sim`` node: the authors' LIBERO evaluation, in this process
(``--backend policy``) or through ``lightvla_node``'s topics on sim time (``--backend node``)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from lightvla_ros.model.configuration import DTYPE_CHOICES, PRUNING_METHODS, READOUT_MODES
from lightvla_ros.model.errors import LightVLAError
from lightvla_ros.ros.core.scheduler import EXECUTION_MODES
from lightvla_ros.sim.evaluation import DRIVE_CHOICES, VIDEO_CHOICES, EvalSettings, evaluate
from lightvla_ros.sim.libero_protocol import ENV_IMAGE_SIZE, SUITES, TRIALS_PER_TASK, unnorm_key


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


def _namespace(text: str) -> str:
    """A ROS namespace, absolute ('robot1' -> '/robot1'); '' for none."""
    text = text.strip().rstrip("/")
    return "" if not text else text if text.startswith("/") else f"/{text}"


def add_simulator_arguments(p: argparse.ArgumentParser) -> None:
    """What to run and how the simulator drives the robot (``eval-libero`` and ``lightvla_libero_sim``)."""
    p.add_argument("--suite", required=True, choices=list(SUITES))
    p.add_argument("--tasks", type=_ints, help="task ids, comma-separated (default: every task of the suite)")
    p.add_argument("--episodes", type=int, default=TRIALS_PER_TASK, help="episodes per task, each from the next of the "
                   "task's fixed initial states (the authors: 50)")
    p.add_argument("--max-steps", type=int, help="policy steps per episode (default: the suite's budget, "
                   + ", ".join(f"{s.name} {s.max_steps}" for s in SUITES.values()) + ")")
    p.add_argument("--seed", type=int, default=7, help="Python/NumPy/torch seed (the authors' 7; the simulator is "
                   "seeded with 0 as theirs is, and inference is deterministic)")
    p.add_argument("--execution-mode", default="open_loop", choices=EXECUTION_MODES,
                   help="how chunks follow each other: open_loop is the authors' protocol (whole chunks); chunk drive: "
                        "run by the simulator without latency; stream drive: run by lightvla_node")
    p.add_argument("--drive", default="chunk", choices=DRIVE_CHOICES,
                   help="chunk: the simulator executes each chunk, standing still while the model runs (the authors' "
                        "protocol); stream (node backend): it runs on at --real-time-factor and executes lightvla_node's "
                        "twist and gripper stream, latency included")
    p.add_argument("--real-time-factor", type=float, default=1.0, help="stream: sim seconds per wall second at most")
    p.add_argument("--fast-reset", action="store_true", help="reset the simulator without rebuilding its model (about "
                   "1 s instead of 7.5 s per episode on a CPU; see README for what it changes)")
    p.add_argument("--video", default="first", choices=VIDEO_CHOICES, help="which episodes of each task are recorded "
                   "(mp4 of the rotated third-person view, plus a frame strip)")
    p.add_argument("--out", help="results folder (default: libero_eval/<suite>-<backend>-<time>)")
    p.add_argument("--resolution", type=int, default=ENV_IMAGE_SIZE, help="camera resolution (the authors: 256)")
    p.add_argument("--namespace", type=_namespace, default="", help="ROS namespace of lightvla_node and the simulator")
    p.add_argument("--chunk-timeout", type=float, default=600.0, help="node: seconds without a chunk before giving up")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval-libero", help="the authors' LIBERO evaluation (success rates, videos), in this process or "
                       "through lightvla_node (needs the libero extra)")
    add_simulator_arguments(p)
    p.add_argument("--backend", default="policy", choices=("policy", "node"),
                   help="policy: in this process; node: lightvla_node through its topics on sim time")
    p.add_argument("--attach", action="store_true", help="node backend: drive the lightvla_node already running in "
                   "--namespace (started with config/libero_sim.yaml) instead of starting one")
    p.add_argument("--domain-id", type=int, help="node backend, started node: ROS_DOMAIN_ID of the node and the "
                   "simulator (default: a private one, localhost only, since the simulator publishes /clock)")
    p.add_argument("--node-timeout", type=float, default=900.0, help="node backend: seconds for lightvla_node to "
                   "load the model and become active")
    p.add_argument("--checkpoint", help="checkpoint folder in the release layout (not with --attach)")
    p.add_argument("--unnorm-key", help="dataset statistics key (default: the suite's, as the authors pick it: "
                   "<suite>, else <suite>_no_noops)")
    p.add_argument("--pruning", default="lightvla", choices=PRUNING_METHODS,
                   help="lightvla (LightVLA checkpoints); none with --readout aligned for OpenVLA-OFT checkpoints")
    p.add_argument("--readout", default="last", choices=READOUT_MODES,
                   help="last: the released LightVLA inference; aligned: OpenVLA-OFT's own (README: action read-out)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N")
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)
    p.add_argument("--cpu-threads", type=int, default=0, help="torch threads on the CPU (0: torch's default)")
    p.set_defaults(func=cmd_eval_libero)


def _statistics_key(checkpoint: str, suite_name: str) -> str:
    """The suite's unnorm key among the checkpoint's statistics, picked as the authors pick it."""
    from lightvla_ros.model.checkpoint import CheckpointFiles, read_statistics
    from lightvla_ros.model.configuration import VLAConfig

    files = CheckpointFiles.discover(checkpoint)
    return unnorm_key(suite_name, read_statistics(files, VLAConfig.from_file(files.config)))


def cmd_eval_libero(args: argparse.Namespace, ros_args: list[str] | None = None) -> int:
    from lightvla_ros.sim import libero_env

    if args.attach and args.backend != "node":
        raise LightVLAError("--attach drives a running lightvla_node: it needs --backend node")
    if args.attach and args.checkpoint:
        raise LightVLAError("--attach uses the running lightvla_node's checkpoint; leave out --checkpoint")
    if not args.attach and not args.checkpoint:
        raise LightVLAError("--checkpoint is required (or --backend node --attach to drive a running lightvla_node)")
    if args.real_time_factor <= 0:
        raise LightVLAError("--real-time-factor must be positive")
    key = args.unnorm_key or (_statistics_key(args.checkpoint, args.suite) if args.checkpoint else "")
    missing = libero_env.libero_available()
    if missing:
        raise LightVLAError(missing)
    out = Path(args.out or f"libero_eval/{args.suite}-{args.backend}-{time.strftime('%Y%m%d-%H%M%S')}")
    settings = EvalSettings(suite=args.suite, out=out, tasks=args.tasks, episodes=args.episodes,
                            max_steps=args.max_steps, seed=args.seed, video=args.video,
                            execution_mode=args.execution_mode, backend=args.backend, drive=args.drive)
    if args.attach:
        extra = {"attached_to": f"{args.namespace}/lightvla_node"}
    else:
        extra = {"checkpoint": args.checkpoint, "unnorm_key": key, "device": args.device, "dtype": args.dtype,
                 "pruning": args.pruning, "readout": args.readout}
    extra.update(resolution=args.resolution, fast_reset=args.fast_reset)

    def open_task(suite_name: str, task_id: int) -> Any:
        return libero_env.LiberoTask(suite_name, task_id, resolution=args.resolution, fast_reset=args.fast_reset)

    num_tasks = libero_env.task_count(args.suite)
    if args.backend == "policy":
        report = evaluate(settings, open_task, _policy_backend(args, key), num_tasks, extra, not args.no_progress)
    else:
        report = _evaluate_through_node(args, settings, open_task, num_tasks, extra, key, ros_args)
    print(report.markdown(), end="")
    print(f"results in {out}/ (summary.json, summary.md, episodes.jsonl"
          + (", videos/)" if args.video != "none" else ")"))
    return 0


def _policy_backend(args: argparse.Namespace, key: str) -> Any:
    import torch

    from lightvla_ros.policy import LightVLAPolicy
    from lightvla_ros.sim.evaluation import PolicyBackend

    if args.cpu_threads > 0:
        torch.set_num_threads(args.cpu_threads)
    policy = LightVLAPolicy.from_checkpoint(args.checkpoint, device=args.device, dtype=args.dtype, pruning=args.pruning,
                                            unnorm_key=key, center_crop=True, readout=args.readout, num_images=2,
                                            preprocessing="auto")
    return PolicyBackend(policy)


def _private_domain(requested: int | None) -> None:
    """A ROS domain for this evaluation and the node it starts (inherited; a private one on loopback unless chosen):
    the simulator publishes /clock, which must reach no other node, and two evaluations must not see each other's
    cameras."""
    from lightvla_ros.ros.core.domain import isolate_ros_domain, private_domain_id

    if requested is None:
        domain = isolate_ros_domain(private_domain_id())
    else:  # chosen to be watched, perhaps from another machine: discovery is left as it is
        domain = requested
        os.environ["ROS_DOMAIN_ID"] = str(domain)
    print(f"ROS domain {domain} (ROS_DOMAIN_ID={domain} to watch it with the ros2 CLI or rviz)", file=sys.stderr)


def _evaluate_through_node(args: argparse.Namespace, settings: EvalSettings, open_task: Any, num_tasks: int,
                           extra: dict[str, Any], key: str, ros_args: list[str] | None) -> Any:
    try:
        from lightvla_ros.sim import ros_sim
    except ImportError as exc:
        raise LightVLAError(f"--backend node needs rclpy ({exc}): source a ROS 2 install or "
                            "pip install 'lightvla_ros[ros]'") from exc
    if not args.attach:
        _private_domain(args.domain_id)
    settings.out.mkdir(parents=True, exist_ok=True)
    spin = ros_sim.SpinThread(lambda: ros_sim.LiberoSimNode(args.namespace, chunk_timeout_s=args.chunk_timeout,
                                                            real_time_factor=args.real_time_factor), ros_args)
    node = None
    try:
        if not args.attach:
            parameters = ros_sim.node_parameters(args.checkpoint, key, args.device, args.dtype, args.pruning,
                                                 args.cpu_threads, args.drive, args.execution_mode, args.readout)
            node = ros_sim.NodeProcess(parameters, args.namespace, settings.out / "lightvla_node.yaml",
                                       settings.out / "lightvla_node.log")
            print(f"starting lightvla_node (log: {node.log_file})", file=sys.stderr)
            node.wait_active(spin.node, args.node_timeout)
        else:
            extra["node_parameters"] = ros_sim.check_running_node(spin.node, args.namespace, args.drive)
        alive = (lambda: node.alive(spin.node)) if node is not None else (lambda: "")
        backend = ros_sim.NodeBackend(spin.node, args.drive, alive)
        return evaluate(settings, open_task, backend, num_tasks, extra, not args.no_progress)
    finally:
        if node is not None:
            node.stop()
        spin.close()


def sim_main(argv: Sequence[str] | None = None) -> None:
    """``lightvla_libero_sim``: LIBERO as the robot of an already running ``lightvla_node`` (started with
    config/libero_sim.yaml, in the same ROS domain); ROS arguments go after ``--ros-args``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    parser = argparse.ArgumentParser(prog="lightvla_libero_sim", description=sim_main.__doc__)
    add_simulator_arguments(parser)
    args = parser.parse_args(argv[:len(argv) - len(ros_args)])
    args.backend, args.attach, args.checkpoint, args.unnorm_key = "node", True, None, None
    try:
        sys.exit(cmd_eval_libero(args, ["lightvla_libero_sim", *ros_args]))
    except LightVLAError as exc:
        print(f"lightvla_libero_sim: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)

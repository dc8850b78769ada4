"""``lightvla eval-libero`` and the ``lightvla_libero_sim`` node: the authors' LIBERO evaluation, in this process
(``--backend policy``) or through ``lightvla_node``'s topics on sim time (``--backend node``)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from lightvla_ros.model.configuration import DTYPE_CHOICES, PRUNING_METHODS
from lightvla_ros.model.errors import LightVLAError
from lightvla_ros.ros.core.scheduler import EXECUTION_MODES
from lightvla_ros.sim.evaluation import VIDEO_CHOICES, EvalSettings, evaluate
from lightvla_ros.sim.libero_protocol import ENV_IMAGE_SIZE, SUITES, TRIALS_PER_TASK, unnorm_key


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


def add_arguments(p: argparse.ArgumentParser, with_backend: bool = True) -> None:
    p.add_argument("--checkpoint", required=with_backend, help="checkpoint folder in the release layout "
                   "(e.g. a LightVLA or OpenVLA-OFT LIBERO checkpoint)")
    p.add_argument("--suite", required=True, choices=list(SUITES))
    p.add_argument("--tasks", type=_ints, help="task ids, comma-separated (default: every task of the suite)")
    p.add_argument("--episodes", type=int, default=TRIALS_PER_TASK, help="episodes per task, each from the next of the "
                   "task's fixed initial states (the authors: 50)")
    p.add_argument("--max-steps", type=int, help="policy steps per episode (default: the suite's budget, "
                   + ", ".join(f"{s.name} {s.max_steps}" for s in SUITES.values()) + ")")
    p.add_argument("--seed", type=int, default=7, help="Python/NumPy/torch seed (the authors' 7)")
    p.add_argument("--execution-mode", default="open_loop", choices=EXECUTION_MODES,
                   help="how chunks are executed: open_loop is the authors' protocol (whole chunks); the others as the "
                        "node's execution_mode, without latency (the simulator waits for the model)")
    p.add_argument("--drive", default="chunk", choices=("chunk", "stream"),
                   help="chunk: the simulator executes each chunk, standing still while the model runs (the authors' "
                        "protocol); stream (node backend): it runs on at --real-time-factor and executes lightvla_node's "
                        "twist and gripper stream under the node's --execution-mode, latency included")
    p.add_argument("--real-time-factor", type=float, default=1.0, help="stream: sim seconds per wall second at most")
    p.add_argument("--video", default="first", choices=VIDEO_CHOICES, help="which episodes of each task are recorded "
                   "(mp4 of the rotated third-person view, plus a frame strip)")
    p.add_argument("--out", help="results folder (default: libero_eval/<suite>-<backend>-<time>)")
    p.add_argument("--resolution", type=int, default=ENV_IMAGE_SIZE, help="camera resolution (the authors: 256)")
    p.add_argument("--chunk-timeout", type=float, default=600.0, help="node backend: seconds to wait for one chunk")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    if with_backend:
        p.add_argument("--backend", default="policy", choices=("policy", "node"),
                       help="policy: in this process; node: lightvla_node through its topics on sim time")
        p.add_argument("--attach", action="store_true", help="node backend: use the lightvla_node already running in "
                       "--namespace, started with the parameters of README's LIBERO section "
                       "(use_sim_time, the simulator's topics), instead of starting one")
        p.add_argument("--namespace", default="", help="node backend: ROS namespace of lightvla_node and the simulator")
        p.add_argument("--node-timeout", type=float, default=900.0, help="node backend: seconds for lightvla_node to "
                       "load the model and become active")
    p.add_argument("--unnorm-key", help="dataset statistics key (default: the suite's, as the authors pick it: "
                   "<suite>, else <suite>_no_noops)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N")
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)
    p.add_argument("--pruning", default="lightvla", choices=PRUNING_METHODS)
    p.add_argument("--cpu-threads", type=int, default=0, help="torch threads on the CPU (0: torch's default)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval-libero", help="the authors' LIBERO evaluation (success rates, videos), in this process or "
                       "through lightvla_node (needs `pip install -e '.[libero]'`)")
    add_arguments(p)
    p.set_defaults(func=cmd_eval_libero)


def _statistics_key(checkpoint: str, suite_name: str) -> str:
    """The suite's unnorm key among the checkpoint's statistics, picked as the authors pick it."""
    from lightvla_ros.model.checkpoint import CheckpointFiles, read_statistics
    from lightvla_ros.model.configuration import VLAConfig

    files = CheckpointFiles.discover(checkpoint)
    return unnorm_key(suite_name, read_statistics(files, VLAConfig.from_file(files.config)))


def cmd_eval_libero(args: argparse.Namespace, attach_ros_args: list[str] | None = None) -> int:
    from lightvla_ros.sim import libero_env

    key = args.unnorm_key or (_statistics_key(args.checkpoint, args.suite) if args.checkpoint else "")
    missing = libero_env.libero_available()
    if missing:
        raise LightVLAError(missing)
    out = Path(args.out or f"libero_eval/{args.suite}-{args.backend}-{time.strftime('%Y%m%d-%H%M%S')}")
    settings = EvalSettings(suite=args.suite, out=out, tasks=args.tasks, episodes=args.episodes,
                            max_steps=args.max_steps, seed=args.seed, video=args.video,
                            execution_mode=args.execution_mode, backend=args.backend, drive=args.drive)
    extra = {"checkpoint": args.checkpoint or "(the running lightvla_node's)", "unnorm_key": key,
             "device": args.device, "dtype": args.dtype, "pruning": args.pruning, "resolution": args.resolution}

    def open_task(suite_name: str, task_id: int) -> Any:
        return libero_env.LiberoTask(suite_name, task_id, resolution=args.resolution)

    num_tasks = libero_env.task_count(args.suite)
    if args.backend == "policy":
        report = evaluate(settings, open_task, _policy_backend(args, key), num_tasks, extra, not args.no_progress)
    else:
        report = _evaluate_through_node(args, settings, open_task, num_tasks, extra, key, attach_ros_args)
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
                                            unnorm_key=key, center_crop=True, num_images=2, preprocessing="auto")
    return PolicyBackend(policy)


def _evaluate_through_node(args: argparse.Namespace, settings: EvalSettings, open_task: Any, num_tasks: int,
                           extra: dict[str, Any], key: str, ros_args: list[str] | None) -> Any:
    try:
        from lightvla_ros.sim import ros_sim
    except ImportError as exc:
        raise LightVLAError(f"--backend node needs rclpy ({exc}): source a ROS 2 install or `pip install -e '.[ros]'`")
    settings.out.mkdir(parents=True, exist_ok=True)
    if args.real_time_factor <= 0:
        raise LightVLAError("--real-time-factor must be positive")
    spin = ros_sim.SpinThread(lambda: ros_sim.LiberoSimNode(args.namespace, chunk_timeout_s=args.chunk_timeout,
                                                            real_time_factor=args.real_time_factor), ros_args)
    node = None
    try:
        if not args.attach:
            parameters = ros_sim.node_parameters(args.checkpoint, key, args.device, args.dtype, args.pruning,
                                                 args.cpu_threads, args.drive, args.execution_mode)
            node = ros_sim.NodeProcess(parameters, args.namespace, settings.out / "lightvla_node.yaml",
                                       settings.out / "lightvla_node.log")
            print(f"starting lightvla_node (log: {node.log_file})", file=sys.stderr)
            node.wait_active(spin.node, args.node_timeout)
        return evaluate(settings, open_task, ros_sim.NodeBackend(spin.node, args.drive), num_tasks, extra,
                        not args.no_progress)
    finally:
        if node is not None:
            node.stop()
        spin.close()


def sim_main(argv: Sequence[str] | None = None) -> None:
    """``lightvla_libero_sim``: LIBERO as a robot for an already running ``lightvla_node`` (same options as
    ``lightvla eval-libero --backend node --attach``; ROS arguments after ``--ros-args``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    own = argv[:len(argv) - len(ros_args)]
    parser = argparse.ArgumentParser(prog="lightvla_libero_sim", description=sim_main.__doc__)
    add_arguments(parser, with_backend=False)
    parser.add_argument("--namespace", default=os.environ.get("LIGHTVLA_NAMESPACE", ""))
    args = parser.parse_args(own)
    args.backend, args.attach, args.node_timeout = "node", True, 0.0
    try:
        sys.exit(cmd_eval_libero(args, ["lightvla_libero_sim", *ros_args]))
    except LightVLAError as exc:
        print(f"lightvla_libero_sim: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)

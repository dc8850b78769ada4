"""The chunk-execution study: record the expert, train a tiny LightVLA, run it through ``lightvla_node`` in every
execution mode at several injected latencies, and write the report.

Every stage goes through the user's tools: the demonstrations are recorded from the sim's topics by
``lightvla record``, the model is trained by ``lightvla train`` from that bag, and the closed loop runs the trained
checkpoint in ``lightvla_node`` (on sim time, with ``publish_actions`` on) against the sim robot.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from experiments.chunk_execution import reacher

MODES = ("open_loop", "replace", "async", "temporal_ensemble")
LATENCIES = (0, 1, 2, 4)  # control periods
REPORT_NAME = "chunk-execution.md"
PLOT_NAME = "chunk-execution.png"
FULL_OUT = "build/chunk-execution"
QUICK_OUT = "build/chunk-execution-quick"
PUBLISHED_REPORT = "docs/chunk-execution.md"
CHUNK_LEN = 8


@dataclass(frozen=True)
class Budget:
    demos: int  # recorded expert episodes
    demo_steps: int  # control periods per demonstration
    train_steps: int
    batch_size: int
    lr: float
    episodes: int  # closed-loop episodes per mode and latency (the same seeds for all)
    max_steps: int  # control periods before an episode counts as a failure


FULL = Budget(demos=60, demo_steps=60, train_steps=1200, batch_size=16, lr=1e-3, episodes=16, max_steps=80)
QUICK = Budget(demos=6, demo_steps=30, train_steps=30, batch_size=8, lr=1e-3, episodes=2, max_steps=30)


@dataclass
class StudyConfig:
    out: str = ""
    report: str = ""
    quick: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        self.out = self.out or (QUICK_OUT if self.quick else FULL_OUT)
        self.report = self.report or str(Path(self.out) / REPORT_NAME)

    @property
    def budget(self) -> Budget:
        return QUICK if self.quick else FULL


def available_modes() -> tuple[str, ...]:
    """The execution modes this lightvla_node has (only today's ``replace`` before the chunk scheduler)."""
    return MODES if "execution_mode" in _node_parameter_names() else ("replace",)


def mode_parameters(mode: str) -> dict[str, Any]:
    """The node parameters that select ``mode`` (its knobs keep their defaults)."""
    return {"execution_mode": mode} if "execution_mode" in _node_parameter_names() else {}


def _node_parameter_names() -> set[str]:
    from lightvla_ros.ros.core.params import NodeConfig

    return {f.name for f in dataclasses.fields(NodeConfig)}


# ------------------------------------------------------------------------------------------------------- stages
def record(root: Path, budget: Budget, seed: int, log) -> tuple[Path, Path]:
    """The expert's demonstrations as a rosbag2, recorded by ``lightvla record`` from the sim's topics."""
    from experiments.chunk_execution.loop import data_config_text, record_demonstrations

    data_config = root / "reacher_topics.yaml"
    data_config.write_text(data_config_text())
    bag = root / "demos"
    shutil.rmtree(bag, ignore_errors=True)
    record_demonstrations(bag, budget.demos, budget.demo_steps, seed, data_config,
                          on_progress=lambda text: log(text) if text.endswith(f"/{budget.demos}") else None)
    return bag, data_config


def train(root: Path, bag: Path, data_config: Path, budget: Budget, seed: int) -> Path:
    """``lightvla train`` (a subprocess, as a user runs it) of a fresh toy LightVLA on the recorded bag."""
    from experiments.pruning_study.toy import make_toy_checkpoint

    init = make_toy_checkpoint(root / "init", seed=seed)
    out = root / "train"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "lightvla_ros.cli", "train", "--checkpoint", str(init), "--data", str(bag),
               "--data-config", str(data_config), "--out", str(out), "--full", "--loss", "mse", "--no-augment",
               "--chunk-len", str(CHUNK_LEN), "--gripper-dims", "", "--steps", str(budget.train_steps),
               "--batch-size", str(budget.batch_size), "--lr", str(budget.lr), "--save-every", "0", "--num-workers", "0",
               "--device", "cpu", "--save-dtype", "float32", "--seed", str(seed), "--no-progress", "--log-every", "50"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: faster than two on a shared 2-core CPU
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    (root / "train.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"lightvla train failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return out / "final"


def closed_loop(checkpoint: Path, modes: tuple[str, ...], budget: Budget, seed: int, log) -> list[dict[str, Any]]:
    """Every mode x latency on the same episode seeds, through one lightvla_node whose mode changes at run time."""
    from experiments.chunk_execution.loop import ClosedLoop
    from lightvla_ros.ros.node import load_policy

    seeds = [seed * 1000 + 500 + i for i in range(budget.episodes)]
    runs = []
    with ClosedLoop(load_policy, str(checkpoint)) as loop:
        for mode in modes:
            for latency in LATENCIES:
                problem = loop.configure(latency, **mode_parameters(mode))
                if problem:
                    raise RuntimeError(f"lightvla_node refused mode {mode}: {problem}")
                started = time.time()
                episodes = [loop.episode(s, budget.max_steps) for s in seeds]
                run = {"mode": mode, "latency": latency, "episodes": [_episode_json(e) for e in episodes],
                       "wall_seconds": time.time() - started}
                run["metrics"] = metrics(run["episodes"])
                runs.append(run)
                m = run["metrics"]
                log(f"{mode:>17} latency {latency}: success {m['success']:.0%}, time {m['time_to_success']:.2f} s, "
                    f"calls/s {m['calls_per_s']:.2f} ({run['wall_seconds']:.0f} s)")
    return runs


def _episode_json(log) -> dict[str, Any]:
    return {"seed": log.seed, "success_step": log.success_step, "inference_calls": log.inference_calls,
            "commands": [[round(float(v), 5) for v in c] for c in log.commands], "new_chunk": list(map(bool, log.new_chunk))}


# ------------------------------------------------------------------------------------------------------- metrics
def metrics(episodes: list[dict[str, Any]]) -> dict[str, float]:
    """Success rate, time to success (successful episodes), smoothness and rates, pooled over episodes.

    Command changes are |c_k - c_(k-1)| of the executed planar velocity as a fraction of ``MAX_SPEED``; a jump at a
    chunk boundary is the change at the first period executed after a new chunk arrived."""
    changes, jumps, gaps, calls, steps = [], [], 0, 0, 0
    for episode in episodes:
        commands = np.asarray(episode["commands"], np.float64).reshape(-1, 2)
        diff = np.linalg.norm(np.diff(commands, axis=0), axis=1) / reacher.MAX_SPEED
        changes.extend(diff.tolist())
        arrivals = np.flatnonzero(episode["new_chunk"][:-1])  # executed from the next period on
        jumps.extend(diff[arrivals].tolist())
        gaps += int((np.linalg.norm(commands, axis=1) == 0).sum())
        calls += episode["inference_calls"]
        steps += len(commands)
    times = [e["success_step"] * reacher.DT for e in episodes if e["success_step"] is not None]
    return {
        "success": float(np.mean([e["success_step"] is not None for e in episodes])),
        "time_to_success": float(np.mean(times)) if times else float("nan"),
        "change_mean": float(np.mean(changes)) if changes else 0.0,
        "change_max": float(np.max(changes)) if changes else 0.0,
        "jump_mean": float(np.mean(jumps)) if jumps else 0.0,
        "gaps": gaps / max(steps, 1),
        "calls_per_s": calls / max(steps * reacher.DT, 1e-9),
    }


# ------------------------------------------------------------------------------------------------------- driver
def run_study(config: StudyConfig) -> dict[str, Any]:
    budget = config.budget
    root = Path(config.out)
    root.mkdir(parents=True, exist_ok=True)
    started = time.time()

    def log(text: str) -> None:
        print(f"[{time.time() - started:6.0f} s] {text}", file=sys.stderr, flush=True)

    modes = available_modes()
    log(f"modes: {', '.join(modes)}; latencies {LATENCIES} periods of {reacher.DT} s")
    stages = {"budget": asdict(budget), "seed": config.seed}
    stamp, checkpoint = root / "trained.json", root / "train" / "final"
    previous = json.loads(stamp.read_text()) if stamp.is_file() else {}
    if {k: previous.get(k) for k in stages} == stages and (checkpoint / "config.json").is_file():
        log(f"reusing the demonstrations and the model trained with the same budget: {checkpoint}")
        prepared = {"seconds": previous["seconds"], "reused": True}
    else:
        stamp.unlink(missing_ok=True)
        bag, data_config = record(root, budget, config.seed, log)
        log(f"recorded {budget.demos} demonstrations: {bag}")
        recorded = time.time() - started
        checkpoint = train(root, bag, data_config, budget, config.seed)
        prepared = {"seconds": {"record": recorded, "train": time.time() - started - recorded}, "reused": False}
        stamp.write_text(json.dumps({**stages, "seconds": prepared["seconds"]}))
        log(f"trained: {checkpoint} (log: {root / 'train.log'})")
    loop_started = time.time()
    runs = closed_loop(checkpoint, modes, budget, config.seed, log)
    results = {"config": asdict(config), "budget": asdict(budget), "modes": list(modes), "latencies": list(LATENCIES),
               "runs": runs, "train": _train_summary(root / "train" / "metrics.csv"),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores", "prepared": prepared,
               "loop_seconds": time.time() - loop_started, "wall_seconds": time.time() - started}
    (root / "results.json").write_text(json.dumps(results))
    write_report(results, Path(config.report))
    log(f"done in {results['wall_seconds'] / 60:.1f} min: {config.report}")
    return results


def _train_summary(metrics_csv: Path) -> dict[str, float]:
    import csv

    rows = list(csv.DictReader(metrics_csv.open())) if metrics_csv.is_file() else []
    losses = [float(r["loss"]) for r in rows if r.get("loss")]
    return {"first_loss": losses[0] if losses else float("nan"), "last_loss": losses[-1] if losses else float("nan"),
            "seconds": float(rows[-1]["elapsed_s"]) if rows else float("nan")}


def render_from_results(config: StudyConfig) -> None:
    results = json.loads((Path(config.out) / "results.json").read_text())
    write_report(results, Path(config.report))


def write_report(results: dict[str, Any], report: Path) -> None:
    from experiments.chunk_execution.report import plot, render_report

    images = report.parent / "img"
    images.mkdir(parents=True, exist_ok=True)
    plot(results, images / PLOT_NAME)
    report.write_text(render_report(results, f"img/{PLOT_NAME}"))

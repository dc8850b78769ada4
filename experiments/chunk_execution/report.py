"""The chunk-execution report: a table per mode and latency, a plot, and what the numbers say."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from experiments.chunk_execution import reacher

LABELS = {"open_loop": "open_loop", "replace": "replace", "async": "async", "temporal_ensemble": "temporal_ensemble"}


def _runs(results: dict[str, Any]) -> dict[tuple[str, int], dict[str, float]]:
    return {(r["mode"], r["latency"]): r["metrics"] for r in results["runs"]}


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, latencies = _runs(results), results["latencies"]
    panels = (("success", "success rate (%)", 100.0), ("time_to_success", "time to success (s)", 1.0),
              ("change_mean", "mean command change (x max speed)", 1.0), ("calls_per_s", "inference calls per s", 1.0))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (key, title, scale) in zip(axes, panels):
        for mode in results["modes"]:
            ax.plot(latencies, [runs[(mode, lat)][key] * scale for lat in latencies], marker="o", label=mode)
        ax.set_xlabel("injected latency (control periods)")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(latencies)
        if key == "success":
            ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _num(value: float, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def table(results: dict[str, Any]) -> str:
    runs = _runs(results)
    lines = ["| mode | latency (periods) | success (%) | time to success (s) | mean / max command change | "
             "jump at chunk arrival | gaps (% of periods) | inference calls / s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mode in results["modes"]:
        for latency in results["latencies"]:
            m = runs[(mode, latency)]
            lines.append(f"| {mode} | {latency} | {100 * m['success']:.0f} | {_num(m['time_to_success'])} | "
                         f"{_num(m['change_mean'], 3)} / {_num(m['change_max'])} | {_num(m['jump_mean'], 3)} | "
                         f"{100 * m['gaps']:.0f} | {_num(m['calls_per_s'], 1)} |")
    return "\n".join(lines)


def headline(results: dict[str, Any]) -> str:
    """At the largest latency: each mode's success and time to success against open_loop."""
    runs, latency = _runs(results), max(results["latencies"])
    base = runs.get(("open_loop", latency))
    lines = [f"At {latency} periods of latency ({latency * reacher.DT:.1f} s):", ""]
    for mode in results["modes"]:
        m = runs[(mode, latency)]
        versus = ""
        if base is not None and mode != "open_loop":
            ratio = m["time_to_success"] / base["time_to_success"] if base["time_to_success"] else float("nan")
            versus = (f" (open_loop: {100 * base['success']:.0f}%, {_num(base['time_to_success'])} s; "
                      f"time x{_num(ratio)})")
        lines.append(f"- **{mode}**: success {100 * m['success']:.0f}%, time to success {_num(m['time_to_success'])} s{versus}")
    return "\n".join(lines)


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


def recommended_mode(results: dict[str, Any]) -> str:
    """The mode with the highest success rate averaged over latencies; ties go to the shorter mean time to success."""
    runs = _runs(results)

    def score(mode: str) -> tuple[float, float]:
        ms = [runs[(mode, lat)] for lat in results["latencies"]]
        return (_mean([m["success"] for m in ms]), -_mean([m["time_to_success"] for m in ms]))

    return max(results["modes"], key=score)


def reading(results: dict[str, Any]) -> str:
    """What the table says, computed from it (so a re-run cannot contradict its own text)."""
    runs, latencies, modes = _runs(results), results["latencies"], results["modes"]
    lines = []
    for key, word in (("success", "success rate"), ("time_to_success", "time to success"),
                      ("change_mean", "mean command change")):
        per_mode = {m: _mean([runs[(m, lat)][key] for lat in latencies]) for m in modes}
        order = sorted(modes, key=lambda m: per_mode[m], reverse=key == "success")
        unit = "%" if key == "success" else (" s" if key == "time_to_success" else "")
        scale = 100.0 if key == "success" else 1.0
        lines.append(f"- Averaged over the latencies, {word}: " + ", ".join(
            f"{m} {_num(per_mode[m] * scale, 0 if key == 'success' else (2 if key != 'change_mean' else 3))}{unit}"
            for m in order) + ".")
    worst = max(latencies)
    drops = {m: runs[(m, min(latencies))]["success"] - runs[(m, worst)]["success"] for m in modes}
    lines.append(f"- Success lost from latency {min(latencies)} to {worst}: " + ", ".join(
        f"{m} {100 * drops[m]:.0f} points" for m in sorted(modes, key=lambda m: drops[m])) + ".")
    lines.append("- Inference calls per second at latency 0: " + ", ".join(
        f"{m} {_num(runs[(m, min(latencies))]['calls_per_s'], 1)}" for m in modes) + ".")
    if len(modes) > 1:
        lines.append(f"- **Default supported by this run: `{recommended_mode(results)}`** (highest success rate averaged "
                     "over the latencies, ties broken by time to success).")
    return "\n".join(lines)


def render_report(results: dict[str, Any], image: str) -> str:
    budget, config = results["budget"], results["config"]
    command = "python -m experiments.chunk_execution" + (" --quick" if config["quick"] else "")
    if config["report"] and not config["report"].startswith(config["out"]):
        command += f" --report {config['report']}"
    missing = [m for m in ("open_loop", "replace", "async", "temporal_ensemble") if m not in results["modes"]]
    note = (f"\n**Modes missing from this run:** {', '.join(missing)} (this lightvla_node has no `execution_mode` "
            "parameter yet; only today's behaviour, `replace`, was measured).\n" if missing else "")
    train = results["train"]
    return f"""# Chunk execution in a closed loop: which mode, at which latency?

*Generated by `{command}` on {results['machine']}: {_timing(results)}. Every number below comes from that run.*
{note}
## Set-up

- **Robot** (`experiments/chunk_execution/reacher.py`, `sim_node.py`): a planar reacher as a ROS 2 node on sim time
  (`/clock`, control period {reacher.DT} s). It publishes a {reacher.IMAGE_SIZE}x{reacher.IMAGE_SIZE} top-down camera
  image and the state (gripper x, y and target x, y) and executes `ee_twist` as a velocity-controlled driver does
  (the twist of the current period, else hold). The target wanders at {reacher.TARGET_SPEED} units/s with a random-walk
  heading; every episode has an actuation error (the executed velocity is rotated by up to {reacher.BIAS_ANGLE} rad and
  scaled by 1 ± {reacher.BIAS_GAIN}) plus noise, so plans executed blind drift and late plans aim where the target was.
  Success: within {reacher.SUCCESS_RADIUS} units of the target for {reacher.HOLD_STEPS} consecutive periods within
  {budget['max_steps']} periods ({budget['max_steps'] * reacher.DT:.0f} s).
- **Data**: the expert (proportional, gain {reacher.GAIN}/s, at most {reacher.MAX_SPEED} units/s) drives the sim through
  `ee_twist` while `lightvla record` records the camera, state, instruction and `ee_twist` topics: {budget['demos']}
  episodes of {budget['demo_steps']} periods.
- **Model**: the pruning study's tiny LightVLA (one 64 px camera, 16 visual tokens, 3-layer Llama of width 64,
  LightVLA pruning), trained by `lightvla train --full --loss mse --no-augment --chunk-len 8` on that bag for
  {budget['train_steps']} steps (batch {budget['batch_size']}, lr {budget['lr']}; training loss {_num(train['first_loss'], 3)} ->
  {_num(train['last_loss'], 4)}). Chunks of 8 steps (0.8 s).
- **Closed loop**: the trained checkpoint in `lightvla_node` (in-process, `use_sim_time: true`, `publish_actions: true`,
  `action_space: eef_delta`, `dt: {reacher.DT}`, `linear_scale: {reacher.LINEAR_SCALE}`), its execution mode set as a
  parameter at run time. The sim advances in lockstep: the model's compute costs no sim time, and a policy wrapper
  injects the latency: a chunk asked for at sim time t is returned when the sim clock reaches t + latency (0, 1, 2 or
  4 periods). {budget['episodes']} episodes per mode and latency, the same episode seeds for all.
- **Measures**: success rate; time to success (mean over successful episodes); command change |c_k - c_(k-1)| of the
  executed planar velocity as a fraction of the maximum speed (mean, and max over all periods); the change at the first
  period executed after a chunk arrived (jumps at chunk boundaries); gaps (periods with no command: the robot holds);
  inference calls per second of sim time.

## Results

{headline(results)}

{table(results)}

![success, time to success, smoothness and inference rate per mode and latency]({image})

## Reading

{reading(results)}

## Caveats

- The state carries the target's position, so the policy need not find the target in the image (the toy model's
  vision is weak: see docs/pruning-study.md); what this study tests is how chunks are executed, not perception.
- The model's compute costs no sim time (lockstep); the injected latency is the whole delay, plus one period that
  every mode shares: a chunk published at a tick is executed from the next tick on.
- With a latency of L periods, every mode but open_loop executes a chunk from its step L + 1 (steps 0 to L - 1 have passed, and step L's
  period passes while it is delivered, after that period's tick). At L = {max(results['latencies'])} only
  {_remaining(results)} of the chunk's 8 steps remain and the next chunk comes L periods after the last was asked for:
  the queue never holds more than `async_threshold` x 8 = 4 steps and no two chunks overlap, so `async` and
  `temporal_ensemble` execute what `replace` does (the same numbers up to timing noise) and the three hold for one
  period between chunks (gaps); open_loop holds for the whole latency between chunks but executes every step.
- One trained model and one task; {budget['episodes']} episodes per cell, so a success rate is +-{_ci(budget['episodes'])}
  points (95%, at 50%).
"""


def _remaining(results: dict[str, Any], chunk_len: int = 8) -> int:
    return max(0, chunk_len - max(results["latencies"]) - 1)


def _ci(episodes: int) -> str:
    return f"{100 * 1.96 * math.sqrt(0.25 / max(episodes, 1)):.0f}"


def _timing(results: dict[str, Any]) -> str:
    prepared = results.get("prepared", {})
    seconds = prepared.get("seconds", {})
    reused = " (reused from an earlier run of the same command and budget)" if prepared.get("reused") else ""
    parts = [f"recording {seconds.get('record', float('nan')) / 60:.1f} min and training "
             f"{seconds.get('train', float('nan')) / 60:.1f} min{reused}"] if seconds else []
    parts.append(f"closed loop {results.get('loop_seconds', results['wall_seconds']) / 60:.1f} min")
    return ", ".join(parts)

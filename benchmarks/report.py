"""Turning measurements into the report: ratios and targets, the roofline table, and JSON / Markdown / PNG files."""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import OPERATING_POINT, STAGES, Inputs, ScenarioResult, Subject, Summary, paired_ratio
from benchmarks.roofline import DEVICES, JETSONS, PRECISIONS, floor, weight_counts
from lightvla_ros.model.flops import TYPICAL_PROMPT_TOKENS, ModelShape, count_flops
from lightvla_ros.model.modeling import LightVLAForActionPrediction
from lightvla_ros.model.presets import openvla_oft_7b_config

SCHEMA = "lightvla-bench/1"
# Targets on the CPU 7b-shaped preset at the operating point (issue "Performance", section Targets).
LLM_RATIO_TOLERANCE = 0.15
FORWARD_RATIO_TOLERANCE = 0.10
PRUNER_SHARE_LIMIT = 0.02
ROOFLINE_KEPT = (None, OPERATING_POINT)


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on (CPU model from /proc/cpuinfo, GPU name, library versions)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                            cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# --------------------------------------------------------------------------------------------- ratios, targets
def _by_name(results: list[ScenarioResult]) -> dict[str, ScenarioResult]:
    return {r.scenario.name: r for r in results}


def ratios(results: list[ScenarioResult]) -> dict[str, Any]:
    """Operating point (k78) against unpruned, the pruner's share, and our path against the authors'."""
    named = _by_name(results)
    out: dict[str, Any] = {}
    base, op = named.get("unpruned"), named.get(f"k{OPERATING_POINT}")
    if base is not None and op is not None:
        for key, flops_key in (("llm", "llm"), ("forward", "total"), ("e2e", None)):
            measured = paired_ratio(op, base, key)
            entry: dict[str, Any] = {"measured": measured.as_dict()}
            if flops_key is not None:
                predicted = op.flops[flops_key] / base.flops[flops_key]
                entry.update(predicted=predicted, deviation=measured.median / predicted - 1.0)
            out[f"{key}_pruned_over_unpruned"] = entry
        out["pruner_share_of_forward"] = {"measured": Summary.of([p / f for p, f in zip(op.samples["pruner"], op.samples["forward"])]).as_dict()}
    for ours, theirs in (("unpruned", "authors-unpruned"), (f"k{OPERATING_POINT}", f"authors-k{OPERATING_POINT}")):
        if ours in named and theirs in named:
            entry = {key: paired_ratio(named[theirs], named[ours], key).as_dict() for key in ("forward", "e2e")}
            their = named[theirs].samples
            entry["lm_head_share"] = Summary.of([h / f for h, f in zip(their["lm_head"], their["forward"])]).as_dict()
            out[f"speedup_over_authors_{ours}"] = entry
    return out


@dataclass(frozen=True)
class Target:
    name: str
    measured: float
    shown: str  # the measured value as the report prints it
    limit: str
    met: bool


def targets(r: dict[str, Any]) -> list[Target]:
    out = []
    if "llm_pruned_over_unpruned" in r:
        dev = r["llm_pruned_over_unpruned"]["deviation"]
        out.append(Target("LLM-stage latency ratio vs FLOPs ratio", dev, f"{dev:+.1%}", f"deviation within +-{LLM_RATIO_TOLERANCE:.0%}",
                          abs(dev) <= LLM_RATIO_TOLERANCE))
        dev = r["forward_pruned_over_unpruned"]["deviation"]
        out.append(Target("end-to-end (forward) latency ratio vs FLOPs ratio", dev, f"{dev:+.1%}",
                          f"deviation within +-{FORWARD_RATIO_TOLERANCE:.0%}", abs(dev) <= FORWARD_RATIO_TOLERANCE))
        share = r["pruner_share_of_forward"]["measured"]["median"]
        out.append(Target("pruner share of the pruned forward", share, f"{share:.2%}", f"below {PRUNER_SHARE_LIMIT:.0%}",
                          share < PRUNER_SHARE_LIMIT))
    key = f"speedup_over_authors_k{OPERATING_POINT}"
    if key in r:
        speedup = r[key]["e2e"]["median"]
        out.append(Target("speed-up over the authors' path (end to end)", speedup, f"{speedup:.3f}x", "above 1x", speedup > 1.0))
    return out


# ------------------------------------------------------------------------------------------------ roofline
@functools.lru_cache(maxsize=1)
def seven_b_meta() -> LightVLAForActionPrediction:
    """The released 7B architecture on the meta device (shapes only; building it takes seconds, so it is kept)."""
    with torch.device("meta"):
        return LightVLAForActionPrediction(openvla_oft_7b_config())


def roofline(prompt_tokens: int = TYPICAL_PROMPT_TOKENS, measured: dict[str, float] | None = None,
             measured_device: str | None = None) -> dict[str, Any]:
    """Floors of the 7B model on every listed device (bf16; Jetsons also int8), unpruned and at the operating point.

    ``prompt_tokens`` defaults to the Llama-2 tokenisation of the default instruction. ``measured`` maps "unpruned" /
    "k78" to a forward median measured on ``measured_device`` (a table key).
    """
    model = seven_b_meta()
    config, shape = model.config, ModelShape.of(model)
    rows = []
    for kept in ROOFLINE_KEPT:
        flops = count_flops(shape, config.num_images, kept, prompt_tokens, config.proprio_dim is not None, kept is not None)
        weights = weight_counts(model, flops.sequence_length)
        scenario = "unpruned" if kept is None else f"k{kept}"
        for device in DEVICES.values():
            for precision in PRECISIONS:
                if precision != "bf16" and device.key not in JETSONS:
                    continue
                row = floor(device, precision, flops.total, weights).as_dict()
                row.update(scenario=scenario, kept=flops.num_kept, sequence_length=flops.sequence_length,
                           weights_read=weights.read, weights_resident=weights.resident)
                if measured and device.key == measured_device and precision == "bf16" and scenario in measured:
                    row["measured_ms"] = measured[scenario]
                rows.append(row)
    return {"model": "OpenVLA-OFT 7B", "prompt_tokens": prompt_tokens, "rows": rows, "jetson": _jetson_summary(rows)}


def _jetson_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per Jetson: how much pruning and how much int8 lower the floor (the question the issue asks)."""
    out = {}
    for key in JETSONS:
        get = {(r["scenario"], r["precision"]): r for r in rows if r["device"] == key}
        op = f"k{OPERATING_POINT}"
        out[key] = {
            "bf16_unpruned_ms": get[("unpruned", "bf16")]["floor_ms"],
            "bf16_pruned_ms": get[(op, "bf16")]["floor_ms"],
            "int8wo_unpruned_ms": get[("unpruned", "int8-wo")]["floor_ms"],
            "int8wo_pruned_ms": get[(op, "int8-wo")]["floor_ms"],
            "int8_pruned_ms": get[(op, "int8")]["floor_ms"],
            "pruning_speedup_bf16": get[("unpruned", "bf16")]["floor_ms"] / get[(op, "bf16")]["floor_ms"],
            "int8wo_speedup_unpruned": get[("unpruned", "bf16")]["floor_ms"] / get[("unpruned", "int8-wo")]["floor_ms"],
            "int8wo_speedup_pruned": get[(op, "bf16")]["floor_ms"] / get[(op, "int8-wo")]["floor_ms"],
            "bf16_fits": get[(op, "bf16")]["fits"],
            "int8_fits": get[(op, "int8-wo")]["fits"],
        }
    return out


# ---------------------------------------------------------------------------------------------- assembling
def build_report(subject: Subject, inputs: Inputs, results: list[ScenarioResult], run_info: dict[str, Any],
                 measured_device: str | None) -> dict[str, Any]:
    r = ratios(results)
    named = _by_name(results)
    measured = {name: named[name].median("forward") for name in ("unpruned", f"k{OPERATING_POINT}") if name in named}
    model = subject.model
    return {
        "schema": SCHEMA,
        "machine": machine_info(model.device),
        "run": run_info,
        "model": model_summary(subject),
        "inputs": {"instruction": inputs.instruction, "prompt_tokens": inputs.prompt_tokens,
                   "camera_shape": list(inputs.image_shape), "num_images": model.config.num_images,
                   "num_patches": model.config.num_patches},
        "scenarios": [scenario_dict(res) for res in results],
        "ratios": r,
        "targets": [t.__dict__ for t in targets(r)],
        "roofline": roofline(inputs.prompt_tokens if measured_device else TYPICAL_PROMPT_TOKENS, measured, measured_device),
    }


def model_summary(subject: Subject) -> dict[str, Any]:
    model = subject.model
    shape = ModelShape.of(model)
    return {
        "label": subject.label,
        "dtype": str(model.dtype).removeprefix("torch."),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vits": [dict(zip(("width", "blocks_run", "mlp", "tokens", "patch_pixels"), v)) for v in shape.vits],
        "llm": {"width": shape.llm_dim, "layers": shape.llm_layers, "mlp": shape.mlp_dim, "vocab": shape.vocab},
        "tokenizer": subject.tokenizer,
        "authors_lm_head_rows": subject.authors.lm_head_rows if subject.authors is not None else None,
        "flops_fraction_vs_7b": flops_fractions(shape, model.config.num_images),
    }


def flops_fractions(shape: ModelShape, num_images: int) -> dict[str, dict[str, float]]:
    """Each stage's share of the total FLOPs, for this model and for the 7B, unpruned and at the operating point."""
    reference = ModelShape.of(seven_b_meta())
    out = {}
    for label, kept in (("unpruned", None), (f"k{OPERATING_POINT}", OPERATING_POINT)):
        for name, s in (("this", shape), ("7b", reference)):
            f = count_flops(s, num_images, kept, pruned=kept is not None).as_dict()
            out[f"{name}_{label}"] = {k: f[k] / f["total"] for k in STAGES}
    return out


def scenario_dict(res: ScenarioResult) -> dict[str, Any]:
    s = res.scenario
    timings = {key: res.summary(key).as_dict() for key in res.samples}
    achieved = {}
    for key in (*STAGES, "forward"):
        flops = res.flops["total" if key == "forward" else key]
        if flops and key in res.samples:
            achieved[key] = flops / (res.median(key) * 1e-3) / 1e9
    return {"name": s.name, "path": s.path, "method": s.method, "count": s.count, "kept": res.kept,
            "sequence_length": res.sequence_length, "flops": res.flops, "timings_ms": timings, "achieved_gflops_per_s": achieved,
            "samples_ms": res.samples}


# --------------------------------------------------------------------------------------------------- files
def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=1))


def _ms(t: dict[str, float]) -> str:
    return f"{t['median']:.1f} [{t['p10']:.1f}-{t['p90']:.1f}]"


def markdown(report: dict[str, Any]) -> str:
    m, run, inputs = report["machine"], report["run"], report["inputs"]
    device = m.get("gpu") or f"{m['cpu']} ({m['cpu_count']} cores, {m['torch_threads']} torch threads, {m['cpu_capability']})"
    lines = [
        f"## LightVLA benchmark: {report['model']['label']}, {report['model']['dtype']}, on {device}",
        "",
        f"torch {m['torch']}, commit {m.get('git_commit')}; {run['reps']} rounds after {run['warmup']} warm-up rounds, every scenario once "
        f"per round (round-robin); load average before/after {run.get('load_before')} / {run.get('load_after')}; "
        f"`{run['command']}`.",
        f"Input: {inputs['num_images']} cameras {inputs['camera_shape'][1]}x{inputs['camera_shape'][0]}, "
        f"{inputs['num_patches']} visual patches, prompt {inputs['prompt_tokens']} tokens (+ 29871, 56 action slots, stop).",
        "",
        "### Latency per stage (ms, median [p10-p90])",
        "",
        "`k<N>` keeps exactly N visual tokens (benchmark pruner: real scoring, union steered to the N best-scored patches); "
        "`lightvla` is the pruner's own union on these random weights; `forward` is end to end without preprocessing, "
        "`e2e` includes preprocessing (image resize and normalisation, prompt) and post-processing.",
        "",
        "| scenario | kept | seq | vision | projector | pruner | LLM | LM head | head | other | forward | preprocess | e2e |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report["scenarios"]:
        t = s["timings_ms"]
        cells = [_ms(t[k]) if k in t else "-" for k in (*STAGES[:4], "lm_head", "head", "other", "forward", "preprocess", "e2e")]
        lines.append(f"| {s['name']} | {s['kept']} | {s['sequence_length']} | " + " | ".join(cells) + " |")
    lines += ["", "### Analytic FLOPs (GFLOP) and achieved throughput", "",
              "| scenario | kept | seq | vision | projector | pruner | LLM | LM head | head | total | forward GFLOP/s | LLM GFLOP/s |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in report["scenarios"]:
        f, a = s["flops"], s["achieved_gflops_per_s"]
        cells = [f"{f[k] / 1e9:.2f}" for k in ("vision", "projector", "pruner", "llm", "lm_head", "head", "total")]
        lines.append(f"| {s['name']} | {s['kept']} | {s['sequence_length']} | " + " | ".join(cells)
                     + f" | {a.get('forward', 0):.1f} | {a.get('llm', 0):.1f} |")
    lines += _ratio_lines(report)
    lines += roofline_lines(report["roofline"])
    return "\n".join(lines) + "\n"


def _ratio_lines(report: dict[str, Any]) -> list[str]:
    r = report["ratios"]
    lines = []
    if "llm_pruned_over_unpruned" in r:
        lines += ["", f"### Pruned (k{OPERATING_POINT}) over unpruned, and targets", "",
                  "| quantity | measured (median of per-round ratios [p10-p90]) | FLOPs-predicted | deviation |",
                  "|---|---:|---:|---:|"]
        for key, label in (("llm", "LLM stage"), ("forward", "forward (end to end, no preprocessing)"), ("e2e", "end to end with preprocessing")):
            e = r[f"{key}_pruned_over_unpruned"]
            pred = f"{e['predicted']:.3f}" if "predicted" in e else "-"
            dev = f"{e['deviation']:+.1%}" if "deviation" in e else "-"
            lines.append(f"| {label} | {e['measured']['median']:.3f} [{e['measured']['p10']:.3f}-{e['measured']['p90']:.3f}] | {pred} | {dev} |")
        share = r["pruner_share_of_forward"]["measured"]
        lines.append(f"| pruner / pruned forward | {share['median']:.2%} [{share['p10']:.2%}-{share['p90']:.2%}] | - | - |")
    speedups = [(k, v) for k, v in r.items() if k.startswith("speedup_over_authors_")]
    if speedups:
        lines += ["", "### Against the authors' inference path (same weights, same kernels, same inputs)", "",
                  "Speed-up = their time / ours, median of per-round ratios [p10-p90]; their LM head's share of their forward "
                  "is the work we skip that shows most directly.", "",
                  "| scenario | forward speed-up | end-to-end speed-up | their LM head / their forward |", "|---|---:|---:|---:|"]
        for key, v in speedups:
            lines.append(f"| {key.removeprefix('speedup_over_authors_')} | {v['forward']['median']:.3f}x "
                         f"[{v['forward']['p10']:.3f}-{v['forward']['p90']:.3f}] | {v['e2e']['median']:.3f}x "
                         f"[{v['e2e']['p10']:.3f}-{v['e2e']['p90']:.3f}] | {v['lm_head_share']['median']:.2%} |")
    if report["targets"]:
        lines += ["", "| target | measured | limit | met |", "|---|---:|---|---|"]
        for t in report["targets"]:
            lines.append(f"| {t['name']} | {t['shown']} | {t['limit']} | {'yes' if t['met'] else 'NO'} |")
    return lines


def roofline_lines(roof: dict[str, Any]) -> list[str]:
    lines = ["", f"### Roofline floors: {roof['model']}, batch 1, prompt {roof['prompt_tokens']} tokens", "",
             "Compute floor = FLOPs / dense peak; weight-read floor = weights read once / memory bandwidth "
             "(spec-sheet peaks, see `benchmarks/roofline.py`). `int8-wo`: weight-only int8 (bf16 math); "
             "`int8`: int8 weights and activations. `fits`: all weights within 85% of device memory.", "",
             "| device | precision | scenario | kept | seq | TFLOP | weights GB | compute floor ms | weight-read floor ms "
             "| floor ms | bound | fits | measured ms |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|"]
    for row in roof["rows"]:
        measured = f"{row['measured_ms']:.1f}" if "measured_ms" in row else "-"
        lines.append(f"| {DEVICES[row['device']].name} | {row['precision']} | {row['scenario']} | {row['kept']} | {row['sequence_length']} | "
                     f"{row['flops'] / 1e12:.2f} | {row['weight_bytes'] / 1e9:.1f} | {row['compute_ms']:.1f} | {row['weight_read_ms']:.1f} | "
                     f"{row['floor_ms']:.1f} | {row['bound']} | {'yes' if row['fits'] else 'no'} | {measured} |")
    lines += ["", "Jetson: how far each lever lowers the floor of the 7B model", "",
              "| device | bf16 unpruned ms | bf16 pruned ms | pruning speed-up | int8-wo speed-up (unpruned / pruned) | "
              "int8 (W8A8) pruned ms | bf16 fits | int8 fits |", "|---|---:|---:|---:|---:|---:|---|---|"]
    for key, j in roof["jetson"].items():
        lines.append(f"| {DEVICES[key].name} | {j['bf16_unpruned_ms']:.0f} | {j['bf16_pruned_ms']:.0f} | {j['pruning_speedup_bf16']:.2f}x | "
                     f"{j['int8wo_speedup_unpruned']:.2f}x / {j['int8wo_speedup_pruned']:.2f}x | {j['int8_pruned_ms']:.0f} | "
                     f"{'yes' if j['bf16_fits'] else 'no'} | {'yes' if j['int8_fits'] else 'no'} |")
    return lines


def plot(report: dict[str, Any], path: Path) -> None:
    """Latency and FLOPs against kept tokens for our path, with the paper's operating point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = sorted((s for s in report["scenarios"] if s["path"] == "ours" and s["count"] is not None), key=lambda s: s["kept"])
    base = next((s for s in report["scenarios"] if s["name"] == "unpruned"), None)
    kept = [s["kept"] for s in sweep]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    for key, label, style in (("forward", "forward (no preprocessing)", "o-"), ("e2e", "end to end (with preprocessing)", "s-"),
                              ("llm", "LLM stage", "^-")):
        med = [s["timings_ms"][key]["median"] for s in sweep]
        err = [[m - s["timings_ms"][key]["p10"] for m, s in zip(med, sweep)], [s["timings_ms"][key]["p90"] - m for m, s in zip(med, sweep)]]
        left.errorbar(kept, med, yerr=err, fmt=style, capsize=3, label=label)
    if base is not None:
        unpruned = base["timings_ms"]["forward"]["median"]
        left.axhline(unpruned, color="grey", ls="--", lw=1, label="unpruned forward")
        predicted = [unpruned * s["flops"]["total"] / base["flops"]["total"] for s in sweep]
        left.plot(kept, predicted, ":", color="black", label="forward predicted by FLOPs")
    left.set_xlabel("kept visual tokens (of 512)")
    left.set_ylabel("latency (ms, median, p10-p90 bars)")
    left.set_title(f"latency: {report['model']['label']}")
    for key, label, style in (("total", "total", "o-"), ("llm", "LLM", "^-"), ("vision", "vision", "s-")):
        right.plot(kept, [s["flops"][key] / 1e9 for s in sweep], style, label=label)
    if base is not None:
        right.axhline(base["flops"]["total"] / 1e9, color="grey", ls="--", lw=1, label="unpruned total")
    right.set_xlabel("kept visual tokens (of 512)")
    right.set_ylabel("GFLOP per forward")
    right.set_title("analytic FLOPs")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(kept, [str(k) for k in kept])
        ax.minorticks_off()
        ax.axvline(OPERATING_POINT, color="tab:red", lw=1)
        ax.annotate(f"paper's operating point (~{OPERATING_POINT} kept)", (OPERATING_POINT, 0.97), xycoords=("data", "axes fraction"),
                    rotation=90, va="top", ha="right", fontsize=8, color="tab:red")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    m = report["machine"]
    fig.suptitle(f"{m.get('gpu') or m['cpu']}, {report['model']['dtype']}, {m['torch_threads']} threads", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(report: dict[str, Any], out_dir: Path, stem: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "markdown": out_dir / f"{stem}.md", "png": out_dir / f"{stem}.png"}
    write_json(report, paths["json"])
    paths["markdown"].write_text(markdown(report))
    if any(s["count"] is not None for s in report["scenarios"]):
        plot(report, paths["png"])
    else:
        del paths["png"]
    return paths


def started() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")

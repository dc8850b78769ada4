"""``python -m benchmarks --quantize-accuracy``: what weight-only quantization does to pruning and actions.

For every ``quantize`` mode that runs on this device, against the same model in float32: the kept-set intersection
over union, the share of pruning queries that pick the same patch, and the absolute error of the normalised actions
(mean and max), over the golden fixture's two cases plus random images, for the fixture checkpoint and for the
7b-shaped preset with random weights. Memory: bytes of the 7B's weights per mode from its shapes (bf16, both the
CPU and the CUDA layouts), and for the 7b-shaped model the stored bytes and the resident memory of a process that
holds it (each mode in its own process, so that peaks do not mix).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightvla_ros.contract import Observation
from lightvla_ros.model.modeling import LightVLAForActionPrediction, VLAOutput
from lightvla_ros.model.quantization import Quantization, planned_weight_bytes, quantize_model, weight_bytes
from lightvla_ros.policy import LightVLAPolicy

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "oft-tiny-libero"  # ../shared from the checkout
MODES = ("int8", "int4-g32", "int4-g128", "fp8")
INSTRUCTIONS = (
    "pick up the black bowl between the plate and the ramekin and place it on the plate",
    "put the cream cheese in the bowl",
    "open the top drawer and put the bowl inside",
    "turn on the stove",
)
BATCH = 8


def random_scene(rng: np.random.Generator, size: int = 224) -> np.ndarray:
    """A smooth random RGB image: coarse noise upsampled, so that patches differ like objects do, not like pixels."""
    coarse = rng.integers(0, 256, (rng.integers(4, 17), rng.integers(4, 17), 3), dtype=np.uint8)
    rows = np.linspace(0, coarse.shape[0] - 1, size).round().astype(int)
    cols = np.linspace(0, coarse.shape[1] - 1, size).round().astype(int)
    return coarse[rows][:, cols]


def observations(policy: LightVLAPolicy, count: int, seed: int) -> list[Observation]:
    """The fixture's golden cases (when the policy takes its two cameras) followed by random scenes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    golden = json.loads((FIXTURE / "golden.json").read_text())
    found = []
    for case in golden["cases"]:
        images = [np.asarray(Image.open(FIXTURE / name).convert("RGB")) for name in case["images"]]
        found.append(Observation(images, case["instruction"], np.asarray(case["proprio_raw"])))
    low, high = policy.normalizer.proprio_low, policy.normalizer.proprio_high
    while len(found) < count:
        state = rng.uniform(low, high) if policy.use_proprio else None
        found.append(Observation([random_scene(rng) for _ in range(policy.num_images)],
                                 INSTRUCTIONS[len(found) % len(INSTRUCTIONS)], state))
    return found[:count]


def forward(policy: LightVLAPolicy, model: LightVLAForActionPrediction, batch: list[Observation]) -> VLAOutput:
    pixels, ids, lengths, proprio = policy.prepare(batch)
    with torch.inference_mode():
        return model(pixels, ids, lengths, proprio, num_images=policy.num_images)


def compare(reference: list[VLAOutput], outputs: list[VLAOutput]) -> dict[str, float]:
    """Kept-set IoU (mean, min), per-query argmax agreement (mean, min), action abs error (mean, max)."""
    ious, agreements, errors = [], [], []
    for ref, out in zip(reference, outputs):
        for a, b in zip(ref.kept_patch_indices, out.kept_patch_indices):
            a, b = set(a.tolist()), set(b.tolist())
            ious.append(len(a & b) / len(a | b))
        agreements.extend((ref.per_query_argmax == out.per_query_argmax).float().mean(dim=-1).tolist())
        errors.append((ref.normalized_actions - out.normalized_actions).abs().flatten(1))
    error = torch.cat(errors)
    return {"iou_mean": float(np.mean(ious)), "iou_min": float(np.min(ious)), "argmax_mean": float(np.mean(agreements)),
            "argmax_min": float(np.min(agreements)), "action_mean": float(error.mean()), "action_max": float(error.max()),
            "samples": len(ious)}


def measure(label: str, policy: LightVLAPolicy, modes: list[str], count: int, seed: int, log) -> list[dict[str, Any]]:
    """Accuracy of each mode against ``policy``'s float32 model over ``count`` observations."""
    batches = [observations(policy, count, seed)[i:i + BATCH] for i in range(0, count, BATCH)]
    start = time.perf_counter()
    reference = [forward(policy, policy.model, batch) for batch in batches]
    log(f"{label}: float32 reference over {count} observations in {time.perf_counter() - start:.0f} s")
    rows = []
    for mode in modes:
        model = copy.deepcopy(policy.model)
        layers = quantize_model(model, mode)
        start = time.perf_counter()
        outputs = [forward(policy, model, batch) for batch in batches]
        rows.append({"model": label, "mode": mode, "layers": len(layers), "weight_bytes": weight_bytes(model),
                     "float32_weight_bytes": weight_bytes(policy.model), **compare(reference, outputs)})
        log(f"{label}: {mode} in {time.perf_counter() - start:.0f} s: {rows[-1]}")
        del model
    return rows


def print_resident_memory(mode: str, seed: int) -> None:
    """Run in a fresh process: build the 7b-shaped model in float32, quantize it, free what quantization replaced,
    run one forward and print the process's resident and peak memory as JSON."""
    from benchmarks.harness import build_subject
    from lightvla_ros.policy import return_freed_heap_memory

    subject = build_subject("7b-shaped", None, torch.device("cpu"), torch.float32, seed, authors=False)
    quantize_model(subject.model, mode)
    gc.collect()
    return_freed_heap_memory()
    forward(subject.policy, subject.model, observations(subject.policy, 1, seed))
    with open("/proc/self/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) * 1024
    print(json.dumps({"mode": mode, "rss": rss, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def resident_memory(modes: list[str], seed: int) -> list[dict[str, Any]]:
    """Resident and peak memory of a fresh process per mode holding the 7b-shaped model after one forward."""
    rows = []
    root = Path(__file__).resolve().parents[1]
    for mode in modes:
        code = f"from benchmarks.quantization import print_resident_memory; print_resident_memory({mode!r}, {seed})"
        done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])})
        if done.returncode:
            raise RuntimeError(f"memory of mode {mode} could not be measured: {done.stderr[-2000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def seven_b_bytes(modes: list[str]) -> list[dict[str, Any]]:
    """Bytes of the 7B's weights per mode, from the shapes of the model built on the meta device (bf16)."""
    from lightvla_ros.model.presets import openvla_oft_7b_config

    with torch.device("meta"):
        model = LightVLAForActionPrediction(openvla_oft_7b_config())
    rows = []
    for mode in ("none", *modes):
        rows.append({"mode": mode, "cpu": planned_weight_bytes(model, mode, 2, "cpu"),
                     "cuda": planned_weight_bytes(model, mode, 2, "cuda")})
    return rows


def markdown(accuracy: list[dict[str, Any]], resident: list[dict[str, Any]], sizes: list[dict[str, Any]], info: dict) -> str:
    gb = 1e9
    lines = [f"Command: `{info['command']}` ({info['seconds']:.0f} s on {info['threads']} CPU threads, torch "
             f"{torch.__version__}, torchao {info['torchao']})", "",
             "| model | mode | layers | weights (MB) | kept IoU mean / min | argmax agreement mean / min | "
             "action abs error mean / max | samples |", "|---|---|---:|---:|---|---|---|---:|"]
    for r in accuracy:
        lines.append(f"| {r['model']} | {r['mode']} | {r['layers']} | {r['weight_bytes'] / 1e6:.1f} (fp32 "
                     f"{r['float32_weight_bytes'] / 1e6:.1f}) | {r['iou_mean']:.3f} / {r['iou_min']:.3f} | "
                     f"{r['argmax_mean']:.3f} / {r['argmax_min']:.3f} | {r['action_mean']:.4f} / {r['action_max']:.4f} | "
                     f"{r['samples']} |")
    lines += ["", "Resident memory of a process holding the 7b-shaped model (float32 activations) after one forward:", "",
              "| mode | resident (MB) | peak (MB) |", "|---|---:|---:|"]
    for r in resident:
        lines.append(f"| {r['mode']} | {r['rss'] / 1e6:.0f} | {r['peak'] / 1e6:.0f} |")
    lines += ["", "Bytes of the 7B's weights (bf16 model; the LLM decoder and projector quantized), from the shapes:", "",
              "| mode | CUDA layout (GB) | CPU layout (GB) |", "|---|---:|---:|"]
    for r in sizes:
        lines.append(f"| {r['mode']} | {r['cuda'] / gb:.2f} | {r['cpu'] / gb:.2f} |")
    return "\n".join(lines) + "\n"


def run_accuracy(args: argparse.Namespace) -> int:
    """The ``--quantize-accuracy`` mode of ``python -m benchmarks`` (``--reps``: observations per model, default
    96 on the fixture and a sixth of that on the 7b-shaped model: about 10 minutes on 2 cores)."""
    import torchao

    from benchmarks.harness import build_subject

    if args.threads:
        torch.set_num_threads(args.threads)
    log = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    device = torch.device("cpu")
    modes = [m for m in MODES if not Quantization.parse(m).problem(device, torch.float32)]
    count = args.reps or 96
    start = time.perf_counter()
    fixture = LightVLAPolicy.from_checkpoint(FIXTURE, device="cpu", dtype="float32", preprocessing="plain")
    accuracy = measure("oft-tiny-libero fixture", fixture, modes, count, args.seed, log)
    subject = build_subject("7b-shaped", None, device, torch.float32, args.seed, authors=False)
    accuracy += measure("7b-shaped (random weights)", subject.policy, modes, max(BATCH, count // 6), args.seed, log)
    del subject
    resident = resident_memory(["none", *modes], args.seed)
    sizes = seven_b_bytes(modes)
    info = {"command": args.command_line, "seconds": time.perf_counter() - start, "threads": torch.get_num_threads(),
            "torchao": torchao.__version__}
    text = markdown(accuracy, resident, sizes, info)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.name or "quantization-accuracy"
    (args.out / f"{stem}.json").write_text(json.dumps({"run": info, "accuracy": accuracy, "resident": resident,
                                                       "seven_b_bytes": sizes}, indent=1))
    (args.out / f"{stem}.md").write_text(text)
    if not args.quiet:
        print(text)
    return 0

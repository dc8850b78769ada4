"""``python -m benchmarks``: the model benchmark (default) and, with ``--node``, the ROS node overhead benchmark."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from benchmarks.harness import BUDGETS, CAMERA_SHAPE, DEFAULT_INSTRUCTION
from lightvla_ros.model.configuration import ALLOCATORS, COMPILE_MODES, DTYPE_CHOICES, QUANTIZE_MODES
from lightvla_ros.model.errors import LightVLAError
from lightvla_ros.model.presets import PRESETS

DEFAULT_OUT = Path("build/bench")


def _camera(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"camera size must look like 640x480, got {text!r}") from exc
    return height, width


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="7b-shaped", choices=list(PRESETS),
                   help="model shape with random weights (default 7b-shaped: the 7B's FLOPs proportions, CPU-sized)")
    p.add_argument("--checkpoint", help="benchmark a checkpoint folder instead of a preset")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N")
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help="auto: bfloat16 on CUDA, float32 on the CPU")
    p.add_argument("--reps", type=int, help="measured rounds (default: the preset's)")
    p.add_argument("--warmup", type=int, help="discarded warm-up rounds (default: the preset's)")
    p.add_argument("--budgets", type=_ints, default=BUDGETS, help=f"exact kept-token counts to sweep (default {','.join(map(str, BUDGETS))})")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--allocator", default="default", choices=ALLOCATORS,
                   help="heap: keep freed activations in glibc's heap instead of re-mapping them (see docs/performance.md)")
    p.add_argument("--instruction", default=DEFAULT_INSTRUCTION)
    p.add_argument("--camera", type=_camera, default=CAMERA_SHAPE, help="camera frame size WxH (default 640x480)")
    p.add_argument("--no-authors", action="store_true", help="skip the authors' inference path baseline")
    p.add_argument("--compile", default="none", choices=COMPILE_MODES,
                   help="torch.compile mode for ViT blocks, projector, decoder layers and head (reduce-overhead = CUDA graphs)")
    p.add_argument("--buckets", type=_ints, help="pad kept tokens up to these counts (static shapes; default with "
                   "--compile reduce-overhead: 32,64,96,128,192,256,384,512)")
    p.add_argument("--quantize", default="none", choices=QUANTIZE_MODES,
                   help="weight-only quantization of the LLM and projector (torchao; see docs/performance.md)")
    p.add_argument("--quantize-accuracy", action="store_true",
                   help="instead of timing: accuracy and memory of every --quantize mode that runs here against float32 "
                        "(benchmarks/quantization.py)")
    p.add_argument("--analytic-only", action="store_true", help="only the FLOPs and roofline tables (runs anywhere, even for --preset 7b)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the JSON, Markdown and PNG (default build/bench)")
    p.add_argument("--name", help="file stem (default bench-<preset>)")
    p.add_argument("--quiet", action="store_true", help="do not print the Markdown report")
    node = p.add_argument_group("node overhead (--node)")
    node.add_argument("--node", action="store_true", help="measure the ROS node's own overhead instead of the model")
    node.add_argument("--node-seconds", type=float, default=20.0, help="how long to stream camera frames")
    node.add_argument("--node-rate", type=float, default=30.0, help="camera frame rate (Hz)")
    node.add_argument("--node-dds", default="default", choices=["default", "large-shm"],
                      help="Fast DDS settings: stock, or a 16 MiB shared-memory segment that fits 640x480 frames")
    node.add_argument("--node-domain", type=int, help="private ROS_DOMAIN_ID (default: 150 + pid %% 80, away from the tests' 1..101)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks",
                                description="Benchmark pruning speed-up, per stage, against FLOPs and the authors' path "
                                "(docs/performance.md); with --node, the ROS node's own overhead.")
    add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_line = " ".join(["python -m benchmarks", *map(shlex.quote, argv)])
    try:
        return cmd_bench(args)
    except LightVLAError as exc:
        print(f"benchmarks: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def cmd_bench(args: argparse.Namespace) -> int:
    if args.node:
        from benchmarks.node_overhead import run_node_benchmark

        return run_node_benchmark(args)
    if args.quantize_accuracy:
        from benchmarks.quantization import run_accuracy

        return run_accuracy(args)
    import torch

    from benchmarks import harness, report
    from benchmarks.roofline import detect_device
    from lightvla_ros.model.acceleration import Acceleration, accelerate
    from lightvla_ros.model.allocator import set_allocator
    from lightvla_ros.model.quantization import quantize_model, weight_bytes
    from lightvla_ros.policy import resolve_device, resolve_dtype

    if args.threads:
        torch.set_num_threads(args.threads)
    if not set_allocator(args.allocator):
        print(f"--allocator {args.allocator}: not available here (needs glibc); using the default allocator", file=sys.stderr)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    stem = args.name or f"bench-{'checkpoint' if args.checkpoint else args.preset}"
    command = args.command_line
    if args.analytic_only:
        return _analytic(args, stem, command)

    default_reps, default_warmup = harness.ROUNDS[args.preset]
    reps = args.reps or default_reps
    warmup = default_warmup if args.warmup is None else args.warmup
    log = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    log(f"building {args.checkpoint or args.preset} on {device} ({dtype}) ...")
    subject = harness.build_subject(None if args.checkpoint else args.preset, args.checkpoint, device, dtype, args.seed,
                                    authors=not args.no_authors)
    quantized = quantize_model(subject.model, args.quantize)
    acceleration = Acceleration.for_mode(args.compile, args.buckets)
    accelerate(subject.model, acceleration)
    inputs = harness.make_inputs(subject.policy, args.instruction, args.camera, args.seed)
    scenarios = harness.default_scenarios(tuple(args.budgets), authors=subject.authors is not None)
    run_info: dict[str, Any] = {"command": command, "started": report.started(), "reps": reps, "warmup": warmup,
                                "seed": args.seed, "acceleration": acceleration.describe(), "allocator": args.allocator,
                                "quantize": args.quantize, "quantized_layers": len(quantized),
                                "weight_bytes": weight_bytes(subject.model),
                                "load_before": report.load_average()}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    results = harness.run(subject, inputs, scenarios, reps, warmup, log)
    run_info.update(duration_s=time.perf_counter() - start, load_after=report.load_average())
    if device.type == "cuda":
        run_info["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    measured_device = None
    if device.type == "cuda" and args.preset == "7b" and not args.checkpoint:
        measured_device = detect_device(torch.cuda.get_device_name(device))
    full = report.build_report(subject, inputs, results, run_info, measured_device)
    paths = report.write_all(full, args.out, stem)
    if not args.quiet:
        print(paths["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    missed = [t for t in full["targets"] if not t["met"]]
    if missed and args.preset == "7b-shaped" and not args.checkpoint:
        print("targets missed: " + "; ".join(f"{t['name']} {t['shown']} ({t['limit']})" for t in missed), file=sys.stderr)
    return 0


def _analytic(args: argparse.Namespace, stem: str, command: str) -> int:
    """FLOPs per kept count for the preset (built on the meta device only) and the 7B roofline."""
    import json
    import tempfile

    import torch
    from tokenizers import Tokenizer

    from benchmarks import report
    from lightvla_ros.model.flops import ModelShape, count_flops
    from lightvla_ros.model.modeling import LightVLAForActionPrediction
    from lightvla_ros.model.processing import PROMPT_TEMPLATE
    from lightvla_ros.model.tiny import make_tokenizer

    with tempfile.TemporaryDirectory() as folder:  # the presets' tokenizer decides the prompt length
        path = Path(folder) / "tokenizer.json"
        vocab = make_tokenizer(path)
        tokenizer = Tokenizer.from_file(str(path))
        prompt_tokens = len(tokenizer.encode(PROMPT_TEMPLATE.format(instruction=args.instruction.lower())).ids)
        config = PRESETS[args.preset].make_config(vocab, tokenizer.token_to_id("\u2581"))
    with torch.device("meta"):
        shape = ModelShape.of(LightVLAForActionPrediction(config))
    flops = [{"scenario": "unpruned" if k is None else f"k{k}",
              **count_flops(shape, config.num_images, k, prompt_tokens, config.proprio_dim is not None, k is not None).as_dict()}
             for k in (None, *args.budgets)]
    full = {"schema": report.SCHEMA, "run": {"command": command, "analytic_only": True}, "preset": args.preset,
            "prompt_tokens": prompt_tokens, "flops": flops, "roofline": report.roofline()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}-analytic.json").write_text(json.dumps(full, indent=1))
    lines = [f"## Analytic FLOPs: preset {args.preset}, prompt {prompt_tokens} tokens", "",
             "| scenario | kept | seq | vision | projector | pruner | LLM | head | total (GFLOP) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for f in flops:
        lines.append(f"| {f['scenario']} | {f['num_kept']} | {f['sequence_length']} | "
                     + " | ".join(f"{f[k] / 1e9:.2f}" for k in ("vision", "projector", "pruner", "llm", "head", "total")) + " |")
    text = "\n".join(lines + report.roofline_lines(full["roofline"])) + "\n"
    (args.out / f"{stem}-analytic.md").write_text(text)
    if not args.quiet:
        print(text)
    return 0

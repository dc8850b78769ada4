"""``lightvla``: the command line.

``predict``, ``preprocess``, ``make-tiny`` and ``flops`` need no ROS. ``demo``, ``instruct``, ``monitor`` and
``record`` (from :mod:`lightvla_ros.ros`) stand in for the ROS 2 CLI where it is missing; ``train`` comes from
:mod:`lightvla_ros.training.commands`, ``eval-libero`` from :mod:`lightvla_ros.sim.commands`. Each such module
exposes ``register(subparsers)``. The benchmark and the pruning study are not part of the package: ``python -m
benchmarks`` and ``python -m experiments.pruning_study`` in a checkout.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

import numpy as np

from lightvla_ros.model.configuration import (
    ALLOCATORS,
    COMPILE_MODES,
    DTYPE_CHOICES,
    PREPROCESSING_CHOICES,
    PRUNING_METHODS,
    QUANTIZE_MODES,
    READOUT_MODES,
    SDPA_BACKENDS,
)
from lightvla_ros.model.errors import LightVLAError


def _parse_proprio(text: str | None) -> np.ndarray | None:
    if text is None:
        return None
    try:
        return np.array([float(v) for v in text.split(",")], dtype=np.float64)
    except ValueError as exc:
        raise LightVLAError(f"--proprio must be comma-separated numbers, got {text!r}") from exc


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


def _load_image(path: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode not in ("RGB", "RGBA", "L", "P", "LA"):
                raise LightVLAError(f"{path} has image mode {image.mode}; expected an RGB-like image (RGB, RGBA, grey, palette)")
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError as exc:
        raise LightVLAError(f"image {path} not found") from exc
    except UnidentifiedImageError as exc:
        raise LightVLAError(f"{path} is not an image file PIL can read") from exc


def cmd_predict(args: argparse.Namespace) -> int:
    from lightvla_ros.model.allocator import set_allocator

    if not set_allocator(args.allocator):
        print(f"--allocator {args.allocator}: not available here (needs glibc); using the default", file=sys.stderr)
    from lightvla_ros.model.acceleration import Acceleration, accelerate
    from lightvla_ros.policy import LightVLAPolicy

    images = [_load_image(p) for p in args.image]
    policy = LightVLAPolicy.from_checkpoint(
        args.checkpoint, device=args.device, dtype=args.dtype, pruning=args.pruning, max_kept_tokens=args.max_kept_tokens,
        unnorm_key=args.unnorm_key, center_crop=args.center_crop, readout=args.readout, num_images=len(images),
        preprocessing=args.preprocessing, quantize=args.quantize, sdpa_backend=args.sdpa_backend,
    )
    accelerate(policy.model, Acceleration.for_mode(args.compile, args.buckets))
    out = policy.predict(images, args.instruction, _parse_proprio(args.proprio))
    if args.json:
        print(json.dumps({**out.to_json(), "unnorm_key": policy.unnorm_key, "device": policy.device, "dtype": policy.dtype,
                          "quantize": policy.quantize}))
        return 0
    np.set_printoptions(precision=4, suppress=True, linewidth=120)
    print(f"checkpoint {policy.checkpoint_dir}  device {policy.device} ({policy.dtype})  pruning {policy.pruning}  "
          f"quantize {policy.quantize} ({len(policy.quantized_layers)} layers)")
    print(f"instruction: {args.instruction!r}")
    print(f"kept visual tokens: {out.num_kept}/{out.num_patches} ({100 * out.keep_ratio:.1f}%), "
          f"FLOPs {out.flops['total'] / 1e9:.2f} G vs {out.flops['unpruned_total'] / 1e9:.2f} G unpruned "
          f"({100 * out.flops['saved_fraction']:.1f}% saved)")
    print("action chunk (un-normalised, one row per step):")
    print(out.actions)
    print("timings (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in out.timings_ms.items()))
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from lightvla_ros.model.processing import ImageProcessor

    if not args.out.lower().endswith(".png"):
        raise LightVLAError(f"--out {args.out} must be a .png file: the image is written losslessly")
    frame = ImageProcessor().frame(_load_image(args.image), 0, crop=args.center_crop, preprocessing="oft")
    try:
        frame.save(args.out)
    except OSError as exc:
        raise LightVLAError(f"cannot write {args.out}: {exc}") from exc
    print(f"wrote {args.out} ({frame.width}x{frame.height}): JPEG round trip, Lanczos-3 resize"
          + (", centre crop" if args.center_crop else ""))
    return 0


def cmd_make_tiny(args: argparse.Namespace) -> int:
    from lightvla_ros.model.tiny import make_tiny_checkpoint

    out = make_tiny_checkpoint(args.out, seed=args.seed, num_images=args.cameras, use_proprio=not args.no_proprio,
                               hidden=args.hidden, layers=args.layers)
    print(f"wrote a tiny random checkpoint to {out}")
    return 0


def cmd_flops(args: argparse.Namespace) -> int:
    from lightvla_ros.model.checkpoint import CheckpointFiles, read_config
    from lightvla_ros.model.flops import ModelShape, count_flops
    from lightvla_ros.model.presets import openvla_oft_7b_config

    if args.checkpoint:
        config, _ = read_config(CheckpointFiles.discover(args.checkpoint), None)
    else:
        config = openvla_oft_7b_config()
    shape = ModelShape.of_config(config)
    print(f"{'kept':>6} {'seq':>5} {'vision':>8} {'proj':>7} {'pruner':>7} {'llm':>8} {'head':>7} {'total':>8}  (TFLOPs)")
    rows = [None, *args.kept]
    for kept in rows:
        f = count_flops(shape, config.num_images, kept, args.prompt_tokens, config.proprio_dim is not None, kept is not None,
                        include_lm_head=args.lm_head)
        print(f"{f.num_kept:>6} {f.sequence_length:>5} {f.vision / 1e12:8.3f} {f.projector / 1e12:7.3f} {f.pruner / 1e12:7.3f} "
              f"{f.llm / 1e12:8.3f} {f.head / 1e12:7.3f} {f.total / 1e12:8.3f}")
    return 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; ``command`` (the first argument) limits which optional modules get imported."""
    parser = argparse.ArgumentParser(prog="lightvla", description="LightVLA (token-pruned OpenVLA-OFT) for ROS 2 robots")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="predict one action chunk from image files and an instruction")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder in the OpenVLA-OFT/LightVLA release layout")
    p.add_argument("--image", action="append", required=True, help="camera image (repeat: third-person first, then wrist)")
    p.add_argument("--instruction", required=True)
    p.add_argument("--proprio", help="robot state, comma-separated (required when the checkpoint has a proprio projector)")
    p.add_argument("--unnorm-key", help="dataset statistics key (default: the only one)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N")
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help="auto: bfloat16 on CUDA, float32 on the CPU")
    p.add_argument("--pruning", default="lightvla", choices=PRUNING_METHODS)
    p.add_argument("--max-kept-tokens", type=int, help="cap on kept visual tokens")
    p.add_argument("--readout", default="last", choices=READOUT_MODES, help="action read-out positions (see README)")
    p.add_argument("--center-crop", action="store_true", help="90%%-area centre crop (LIBERO-trained checkpoints)")
    p.add_argument("--compile", default="none", choices=COMPILE_MODES,
                   help="torch.compile the model (reduce-overhead: CUDA graphs over kept-token buckets; pays off over many "
                   "calls, as in the node, not for one prediction)")
    p.add_argument("--buckets", type=_ints, help="pad kept tokens up to these counts, comma-separated (default with "
                   "--compile reduce-overhead: 32,64,96,128,192,256,384,512)")
    p.add_argument("--sdpa-backend", default="auto", choices=SDPA_BACKENDS, help="attention kernel (auto: torch picks)")
    p.add_argument("--allocator", default="default", choices=ALLOCATORS,
                   help="heap: keep freed activations in glibc's heap (faster unpruned CPU inference; docs/performance.md)")
    p.add_argument("--quantize", default="none", choices=QUANTIZE_MODES,
                   help="weight-only quantization of the LLM and projector (torchao; int4 = int4-g128; fp8 needs a GPU "
                        "with fp8 or the CPU). Accuracy: docs/performance.md")
    p.add_argument("--preprocessing", default="auto", choices=PREPROCESSING_CHOICES,
                   help="oft: the authors' evaluation chain (JPEG round trip, TF Lanczos resize, TF crop); "
                        "plain: frames go to the processor as they are (checkpoints trained on such frames); "
                        "auto: oft with --center-crop, plain without")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("preprocess", help="write the image an OFT/LightVLA checkpoint sees (the authors' evaluation chain)")
    p.add_argument("--image", required=True, help="camera image, already in the training orientation")
    p.add_argument("--center-crop", action="store_true", help="also the 90%%-area centre crop (LIBERO-trained checkpoints)")
    p.add_argument("--out", required=True, help="output .png (lossless)")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("make-tiny", help="write a tiny random checkpoint in the release layout")
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cameras", type=int, default=2, help="number of camera images the checkpoint expects")
    p.add_argument("--no-proprio", action="store_true", help="no robot-state input (no proprio projector)")
    p.add_argument("--hidden", type=int, default=64, help="LLM width")
    p.add_argument("--layers", type=int, default=2, help="LLM layers")
    p.set_defaults(func=cmd_make_tiny)

    p = sub.add_parser("flops", help="analytic FLOPs per stage (default: the released 7B architecture)")
    p.add_argument("--checkpoint", help="a checkpoint folder instead of the 7B architecture")
    p.add_argument("--kept", type=int, nargs="*", default=[16, 32, 64, 78, 90, 128, 256])
    p.add_argument("--prompt-tokens", type=int, default=34, help="tokenised prompt length with BOS")
    p.add_argument("--lm-head", action="store_true", help="count the LM head as the reference code evaluates it")
    p.set_defaults(func=cmd_flops)

    _register_optional(sub, command)
    return parser


# subcommand -> module providing it; such modules may import heavy dependencies, so only the one needed is imported
OPTIONAL_COMMANDS = {
    "demo": "lightvla_ros.ros.commands",
    "instruct": "lightvla_ros.ros.commands",
    "monitor": "lightvla_ros.ros.commands",
    "record": "lightvla_ros.ros.record",
    "train": "lightvla_ros.training.commands",
    "eval-libero": "lightvla_ros.sim.commands",
}


def _register_optional(sub: argparse._SubParsersAction, command: str | None) -> None:
    """Register the optional subcommands (all of them for help, else only the requested one's module).

    A module whose dependencies are missing (rclpy without ROS) gets placeholder subcommands that explain it.
    """
    if command in OPTIONAL_COMMANDS:
        modules = [OPTIONAL_COMMANDS[command]]
    elif command in sub.choices:
        modules = []
    else:
        modules = list(dict.fromkeys(OPTIONAL_COMMANDS.values()))
    for module in modules:
        try:
            __import__(module, fromlist=["register"]).register(sub)
        except ImportError as exc:
            reason = str(exc)
            for name in (n for n, m in OPTIONAL_COMMANDS.items() if m == module and n not in sub.choices):
                p = sub.add_parser(name, help=f"(unavailable: {reason})")
                p.set_defaults(func=lambda args, reason=reason: _unavailable(args, reason))


def _unavailable(args: argparse.Namespace, reason: str) -> int:
    print(f"lightvla {args.command}: unavailable here ({reason}). Source a ROS 2 install or `pip install .[ros]`.", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LightVLAError as exc:
        print(f"lightvla {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

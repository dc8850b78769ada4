"""``lightvla train`` (registered by :mod:`lightvla_ros.cli`)."""

from __future__ import annotations

import argparse
import sys

from lightvla_ros.model.configuration import NOISE_KINDS, PRUNING_METHODS, READOUT_MODES
from lightvla_ros.training.trainer import TrainConfig


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


def example_data_config(form: str) -> str:
    """The annotated ``--data-config`` for a rosbag2 recording, a LeRobot dataset, or both (each a complete file)."""
    from lightvla_ros.training.lerobot import EXAMPLE_CONFIG as LEROBOT
    from lightvla_ros.training.rosbag import EXAMPLE_CONFIG as ROSBAG

    if form == "rosbag":
        return ROSBAG
    if form == "lerobot":
        return LEROBOT
    return (f"# ---- for a rosbag2 recording (`lightvla train --example-data-config rosbag` prints only this) ----\n{ROSBAG}\n"
            f"# ---- for a LeRobot dataset folder (`lightvla train --example-data-config lerobot`) ----\n{LEROBOT}")


def cmd_train(args: argparse.Namespace) -> int:
    from lightvla_ros.training.trainer import Trainer

    if args.example_data_config:
        print(example_data_config(args.example_data_config), end="")
        return 0
    if args.out is None or (args.resume is None and (args.checkpoint is None or args.data is None)):
        print("lightvla train: --out, --checkpoint and --data are required (--resume replaces the last two)", file=sys.stderr)
        return 2
    config = TrainConfig(
        checkpoint=args.checkpoint or "", out=args.out, data=args.data, data_config=args.data_config, dataset_name=args.dataset_name,
        pruning=args.pruning, noise=args.noise, star_num_queries=args.star_queries, star_position=args.star_position,
        star_llm_layer=args.star_llm_layer, star_vision_block=args.star_vision_block, steps=args.steps, batch_size=args.batch_size,
        grad_accum=args.grad_accum, lr=args.lr, lr_milestones=args.lr_milestones, lr_gamma=args.lr_gamma,
        weight_decay=args.weight_decay, lora_rank=0 if args.full else args.lora_rank, lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout, fresh_heads=not args.keep_heads, chunk_len=args.chunk_len, gripper_dims=args.gripper_dims,
        augment=not args.no_augment, loss=args.loss, readout=args.readout, dtype=args.dtype, save_dtype=args.save_dtype,
        save_every=args.save_every, keep_checkpoints=args.keep_checkpoints, val_episodes=args.val_episodes, eval_every=args.eval_every,
        log_every=args.log_every, seed=args.seed, num_workers=args.num_workers, device=args.device,
        skip_bad_episodes=args.skip_bad_episodes, progress=not args.no_progress,
    )
    trainer = Trainer(config, resume=args.resume)
    final = trainer.run()
    if trainer.dist.main:
        crop = " --center-crop" if trainer.config.augment else ""
        print(f"done: {final}\n  try: lightvla predict --checkpoint {final}{crop} --image ... --instruction ...")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="fine-tune a checkpoint with learned token pruning on rosbag2 / LeRobot data",
                              description="Fine-tune a release-layout checkpoint (LoRA or full) with LightVLA pruning.")
    p.add_argument("--checkpoint", help="checkpoint folder in the release layout to start from")
    p.add_argument("--data", help="rosbag2 folder (or folder of bags) or LeRobot dataset folder")
    p.add_argument("--out", help="output folder (checkpoints, metrics.csv, final/)")
    p.add_argument("--data-config", help="YAML mapping of topics (rosbag2) or features (LeRobot) to cameras, state and actions")
    p.add_argument("--example-data-config", nargs="?", const="both", choices=["both", "rosbag", "lerobot"],
                   help="print an annotated --data-config (topic mapping of a rosbag2, feature mapping of a LeRobot dataset, "
                        "or both) and exit")
    p.add_argument("--dataset-name", help="key in dataset_statistics.json (default: the data folder's name)")
    p.add_argument("--resume", help="continue from a run's output folder or one of its checkpoints/step-N folders")
    g = p.add_argument_group("pruning")
    g.add_argument("--pruning", default="lightvla", choices=PRUNING_METHODS)
    g.add_argument("--noise", default="uniform", choices=NOISE_KINDS, help="selection noise (uniform = released code)")
    g.add_argument("--star-queries", type=int, default=64, help="LightVLA*: number of learnable queries")
    g.add_argument("--star-position", default="llm", choices=["llm", "vision"])
    g.add_argument("--star-llm-layer", type=int, default=1, help="LightVLA*: prune at the input of this LLM layer (0-3)")
    g.add_argument("--star-vision-block", type=int, default=0, help="LightVLA* in the vision encoder: after this block")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, default=10_000, help="optimizer steps (the LIBERO recipe: 40000; see README)")
    g.add_argument("--batch-size", type=int, default=8, help="per process")
    g.add_argument("--grad-accum", type=int, default=1,
                   help="micro-batches per step; the reference recipe's batch of 64 is --batch-size 8 --grad-accum 8 on one GPU")
    g.add_argument("--lr", type=float, default=5e-4)
    g.add_argument("--lr-milestones", type=_int_list, help="steps where the lr is multiplied by --lr-gamma (default: 75%% of --steps)")
    g.add_argument("--lr-gamma", type=float, default=0.1)
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--lora-rank", type=int, default=32)
    g.add_argument("--lora-alpha", type=int, default=16,
                   help="LoRA scale numerator, kept at 16 whatever the rank (the reference uses min(rank, 16))")
    g.add_argument("--lora-dropout", type=float, default=0.0)
    g.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA (small models)")
    g.add_argument("--keep-heads", action="store_true", help="resume the checkpoint's L1 head and proprio projector (default: fresh)")
    g.add_argument("--chunk-len", type=int, help="action chunk length for fresh heads (default: the checkpoint's)")
    g.add_argument("--gripper-dims", type=_int_list, default=[-1], help="action dims left un-normalised (default -1; '' for none)")
    g.add_argument("--no-augment", action="store_true", help="no image augmentation (then run inference without --center-crop)")
    g.add_argument("--loss", default="l1", choices=["l1", "mse"],
                   help="l1: the reference's; mse: only for a policy trained from scratch (L1 can collapse it to the median action)")
    g.add_argument("--readout", default="last", choices=READOUT_MODES, help="action read-out; 'last' matches inference")
    g.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"], help="base weights (auto: bf16 for LoRA on CUDA)")
    g.add_argument("--save-dtype", default="bfloat16", choices=["bfloat16", "float32"], help="dtype of saved weights")
    g.add_argument("--seed", type=int, default=7)
    g = p.add_argument_group("run")
    g.add_argument("--save-every", type=int, default=1000, help="steps between checkpoints (0: only the final one)")
    g.add_argument("--keep-checkpoints", type=int, default=2)
    g.add_argument("--val-episodes", type=int, default=0, help="hold out the last N episodes; their L1 is logged at each save")
    g.add_argument("--eval-every", type=int, default=0, help="steps between held-out evaluations (0: at each save)")
    g.add_argument("--log-every", type=int, default=10)
    g.add_argument("--num-workers", type=int, default=2)
    g.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N (torchrun: one GPU per process)")
    g.add_argument("--skip-bad-episodes", action="store_true", help="drop episodes the data report flags instead of stopping")
    g.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)

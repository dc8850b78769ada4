"""A tiny random checkpoint in the release layout, with its own small tokenizer, for demos and tests.

Same file names, keys and formats as a real LightVLA checkpoint (two 224 px cameras, 512 patches, 8-d proprio,
8x7 LIBERO-style chunks), but ViTs and Llama of a few hundred thousand parameters, so everything runs on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lightvla_ros.model.checkpoint import save_checkpoint
from lightvla_ros.model.configuration import PruningConfig
from lightvla_ros.model.presets import random_model, tiny_config

TINY_VOCAB = 448
TINY_LIBERO_KEY = "tiny_libero"

_OBJECTS = ["bowl", "plate", "mug", "cube", "drawer", "ramekin", "stove", "basket", "block", "cup", "pot", "box"]
_COLOURS = ["red", "green", "blue", "yellow", "black", "white"]
_VERBS = ["pick up", "put", "push", "open", "close", "place", "reach", "move", "turn on", "stack"]


def _corpus() -> list[str]:
    lines = []
    for verb in _VERBS:
        for colour in _COLOURS:
            for obj in _OBJECTS:
                lines.append(f"In: What action should the robot take to {verb} the {colour} {obj} on the plate?\nOut:")
    return lines


def make_tokenizer(path: Path, vocab_size: int = TINY_VOCAB) -> int:
    """Train a small SentencePiece-style BPE tokenizer (BOS added like Llama's); returns its vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>", "<PAD>"],
        initial_alphabet=["\u2581"],
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer.save(str(path))
    return tokenizer.get_vocab_size()


def tiny_statistics(seed: int, use_proprio: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    low = -rng.uniform(0.5, 1.0, 7)
    high = rng.uniform(0.5, 1.0, 7)
    plow = -rng.uniform(1.0, 2.0, 8)
    phigh = rng.uniform(1.0, 2.0, 8)
    stats = {
        TINY_LIBERO_KEY: {
            "action": {"q01": low.tolist(), "q99": high.tolist(), "min": (low - 0.1).tolist(), "max": (high + 0.1).tolist(),
                       "mean": ((low + high) / 2).tolist(), "std": ((high - low) / 4).tolist(), "mask": [True] * 6 + [False]},
            "num_transitions": 0,
            "num_trajectories": 0,
        }
    }
    if use_proprio:
        stats[TINY_LIBERO_KEY]["proprio"] = {
            "q01": plow.tolist(), "q99": phigh.tolist(), "min": (plow - 0.1).tolist(), "max": (phigh + 0.1).tolist(),
            "mean": ((plow + phigh) / 2).tolist(), "std": ((phigh - plow) / 4).tolist()}
    return stats


def make_tiny_checkpoint(out_dir: str | Path, seed: int = 0, pruning: PruningConfig | None = None, num_images: int = 2,
                         use_proprio: bool = True, hidden: int = 64, layers: int = 2) -> Path:
    """Write a random tiny checkpoint to ``out_dir`` (created if needed) and return the folder."""
    from tokenizers import Tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = make_tokenizer(out / "tokenizer.json")
    prefix = Tokenizer.from_file(str(out / "tokenizer.json")).token_to_id("\u2581")
    config = tiny_config(vocab, prefix, hidden, layers, num_images, 8 if use_proprio else None)
    config.norm_stats = tiny_statistics(seed, use_proprio)
    model = random_model(config, pruning, seed=seed)
    (out / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "PrismaticImageProcessor", "image_resize_strategy": "resize-naive",
        "input_sizes": [[3, 224, 224], [3, 224, 224]], "interpolations": ["bicubic", "bicubic"],  # per featurizer
        "means": [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]], "stds": [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]],
        "use_fused_vision_backbone": True}, indent=2))
    (out / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
                                                             "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<PAD>"}, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<PAD>"}))
    save_checkpoint(model, out, step=0)
    return out

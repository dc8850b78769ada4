"""The timing harness: one process, one model, the same inputs for every scenario.

Scenarios run round-robin (every scenario once per round, rounds repeated), so slow periods caused by other
processes hit all scenarios alike, and ratios are taken per round before their median is reported. The first
``warmup`` rounds are discarded.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from benchmarks.authors import AuthorsPath
from lightvla_ros.model.checkpoint import LM_HEAD_KEY, CheckpointFiles
from lightvla_ros.model.configuration import PruningConfig, VLAConfig
from lightvla_ros.model.errors import InputError
from lightvla_ros.model.flops import ModelShape, count_flops
from lightvla_ros.model.modeling import LightVLAForActionPrediction, StageTimer
from lightvla_ros.model.presets import PRESETS, SEVEN_B_SHRINK, random_model
from lightvla_ros.model.processing import Normalizer
from lightvla_ros.model.pruning import FixedCountPruner, TokenPruner
from lightvla_ros.model.tiny import make_tokenizer, tiny_statistics
from lightvla_ros.policy import LightVLAPolicy

BUDGETS = (16, 32, 64, 78, 128, 256, 512)
OPERATING_POINT = 78  # the paper's mean kept count on LIBERO
DEFAULT_INSTRUCTION = "pick up the black bowl between the plate and the ramekin and place it on the plate"
CAMERA_SHAPE = (480, 640)  # the node's cameras: 640x480 RGB
STAGES = ("vision", "projector", "pruner", "llm", "head")
# (measured rounds, warm-up rounds) per preset by default
ROUNDS = {"tiny": (5, 1), "7b-shaped": (12, 2), "7b": (30, 5)}


def lm_head_rows(preset: str, config: VLAConfig) -> int:
    """Rows of the LM head the authors' path evaluates: the 7B's vocabulary, scaled like every other width in
    7b-shaped so that its share of the cost stays the 7B's."""
    vocab = int(config.text["vocab_size"])
    return vocab // SEVEN_B_SHRINK if preset == "7b-shaped" else vocab


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str  # "ours" or "authors"
    method: str  # "none" (all 512 patches) or "lightvla"
    count: int | None = None  # exact kept count (FixedCountPruner); None: the pruner's own union

    @property
    def pruned(self) -> bool:
        return self.method != "none"


def default_scenarios(budgets: tuple[int, ...] = BUDGETS, authors: bool = True) -> list[Scenario]:
    """Unpruned, the pruner's own union, then exact kept counts; each authors'-path scenario runs right after its
    counterpart in our path, so that their per-round ratio compares neighbouring measurements."""
    scenarios = [Scenario("unpruned", "ours", "none")]
    if authors:
        scenarios.append(Scenario("authors-unpruned", "authors", "none"))
    scenarios.append(Scenario("lightvla", "ours", "lightvla"))
    for k in budgets:
        scenarios.append(Scenario(f"k{k}", "ours", "lightvla", k))
        if authors and k == OPERATING_POINT:
            scenarios.append(Scenario(f"authors-k{k}", "authors", "lightvla", k))
    return scenarios


@dataclass
class Subject:
    """What is measured: the model, the policy wrapped around it, and the authors' path over the same model."""

    label: str
    model: LightVLAForActionPrediction
    policy: LightVLAPolicy
    authors: AuthorsPath | None
    tokenizer: str
    keepalive: Any = None  # the temporary folder holding a preset's tokenizer

    def configure(self, scenario: Scenario) -> None:
        self.model.pruner = FixedCountPruner(scenario.count) if scenario.count is not None else TokenPruner()
        self.model.set_pruning(PruningConfig(scenario.method))


def build_subject(preset: str | None, checkpoint: str | None, device: torch.device, dtype: torch.dtype,
                  seed: int = 0, authors: bool = True) -> Subject:
    """A preset with random weights, or a checkpoint folder (then its own tokenizer, statistics and LM head)."""
    if checkpoint is not None:
        dtype_name = str(dtype).removeprefix("torch.")
        policy = LightVLAPolicy.from_checkpoint(checkpoint, device=str(device), dtype=dtype_name)
        lm_head = _checkpoint_lm_head(policy)
        path = AuthorsPath(policy.model, policy.files.tokenizer, policy.processor, policy.normalizer, lm_head) if authors else None
        return Subject(f"checkpoint {checkpoint}", policy.model, policy, path, str(policy.files.tokenizer))
    spec = PRESETS[preset]
    if device.type == "cpu" and not spec.cpu_ok:
        raise InputError(f"preset {preset!r} needs a GPU (about 15 GB of bf16 weights and minutes per forward on a CPU); "
                         "use --device cuda, or --analytic-only for its FLOPs and roofline tables")
    folder = tempfile.TemporaryDirectory(prefix="lightvla-bench-")
    root = Path(folder.name)
    from tokenizers import Tokenizer

    vocab = make_tokenizer(root / "tokenizer.json")
    prefix = Tokenizer.from_file(str(root / "tokenizer.json")).token_to_id("\u2581")
    config = spec.make_config(vocab, prefix)
    config.norm_stats = tiny_statistics(seed)
    model = random_model(config, seed=seed, device=device, dtype=dtype).eval()
    files = CheckpointFiles(root=root, config=root / "config.json", weights=[], action_head=root / "action_head",
                            proprio_projector=None, star_pruner=None, statistics=None, tokenizer=root / "tokenizer.json",
                            preprocessor=root / "preprocessor_config.json")
    normalizer = Normalizer.from_statistics(config.norm_stats, None)
    policy = LightVLAPolicy(model, files, normalizer, center_crop=False, device=device)
    path = None
    if authors:
        generator = torch.Generator().manual_seed(seed + 1)
        weight = torch.randn(lm_head_rows(preset, config), config.llm_dim, generator=generator) * 0.02
        path = AuthorsPath(model, files.tokenizer, policy.processor, normalizer, weight)
    return Subject(f"preset {preset}", model, policy, path, "generated BPE (tiny.make_tokenizer)", folder)


def _checkpoint_lm_head(policy: LightVLAPolicy) -> torch.Tensor:
    """The checkpoint's LM head (the authors' path evaluates it); tied to the input embeddings when absent."""
    from safetensors import safe_open

    for path in policy.files.weights:
        with safe_open(str(path), framework="pt") as f:
            if LM_HEAD_KEY in f.keys():
                return f.get_tensor(LM_HEAD_KEY)
    return policy.model.llm.embed_tokens.weight.detach().cpu()


@dataclass
class Inputs:
    """One observation, raw (for the end-to-end runs) and prepared once (for the model-only runs)."""

    images: list[np.ndarray]
    instruction: str
    proprio: np.ndarray | None
    pixel_values: torch.Tensor
    text_ids: torch.Tensor
    text_lengths: torch.Tensor
    state: torch.Tensor | None
    prompt_tokens: int  # tokenised prompt with BOS, before 29871, the action slots and the stop token

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.images[0].shape[:2]


def make_inputs(policy: LightVLAPolicy, instruction: str = DEFAULT_INSTRUCTION, camera_shape: tuple[int, int] = CAMERA_SHAPE,
                seed: int = 0) -> Inputs:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (*camera_shape, 3), dtype=np.uint8) for _ in range(policy.num_images)]
    proprio = None
    if policy.use_proprio:
        proprio = 0.5 * (policy.normalizer.proprio_low + policy.normalizer.proprio_high)
    device = policy.model.device
    pixels = policy.processor(images, crop=policy.center_crop)[None].to(device)
    ids = torch.tensor([policy.prompts(instruction)], device=device)
    state = None
    if proprio is not None:
        state = torch.from_numpy(policy.normalizer.normalize_proprio(proprio))[None].to(device)
    lengths = torch.tensor([ids.shape[1]], device=device)
    return Inputs(images, instruction, proprio, pixels, ids, lengths, state, len(policy.prompts.prompt_ids(instruction)))


@dataclass
class Summary:
    """Median and spread of repeated measurements (milliseconds, or a ratio)."""

    median: float
    p10: float
    p90: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> "Summary":
        a = np.asarray(values, dtype=np.float64)
        return cls(float(np.median(a)), float(np.percentile(a, 10)), float(np.percentile(a, 90)), float(a.min()),
                   float(a.max()), len(a))

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "p10": self.p10, "p90": self.p90, "min": self.min, "max": self.max, "n": self.n}


@dataclass
class ScenarioResult:
    scenario: Scenario
    kept: int
    sequence_length: int
    flops: dict[str, float]
    samples: dict[str, list[float]] = field(default_factory=dict)  # per round: stages, other, forward, preprocess, e2e

    def summary(self, key: str) -> Summary:
        return Summary.of(self.samples[key])

    def median(self, key: str) -> float:
        return self.summary(key).median


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure_ours(subject: Subject, inputs: Inputs) -> tuple[dict[str, float], int, int]:
    model, device = subject.model, subject.model.device
    timer = StageTimer(device)
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model(inputs.pixel_values, inputs.text_ids, inputs.text_lengths, inputs.state,
                    num_images=model.config.num_images, timer=timer)
        out.normalized_actions.float().cpu()
    forward = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    predicted = subject.policy.predict(inputs.images, inputs.instruction, inputs.proprio)
    e2e = (time.perf_counter() - start) * 1e3
    sample = {**timer.ms, "forward": forward, "preprocess": predicted.timings_ms["preprocess"], "e2e": e2e}
    return sample, len(out.kept_patch_indices[0]), out.sequence_lengths[0]


def _measure_authors(subject: Subject, inputs: Inputs) -> tuple[dict[str, float], int, int]:
    authors, device = subject.authors, subject.model.device
    timer = StageTimer(device)
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        ids, pixels, state = authors.preprocess(inputs.images, inputs.instruction, inputs.proprio)
        preprocess = (time.perf_counter() - start) * 1e3
        forward_start = time.perf_counter()
        normalized, kept, length = authors.forward(ids, pixels, state, timer)
        forward = (time.perf_counter() - forward_start) * 1e3
        authors.normalizer.unnormalize_actions(normalized)
    e2e = (time.perf_counter() - start) * 1e3
    return {**timer.ms, "forward": forward, "preprocess": preprocess, "e2e": e2e}, kept, length


def scenario_flops(subject: Subject, scenario: Scenario, kept: int, sequence_length: int, prompt_tokens: int) -> dict[str, float]:
    """Analytic FLOPs of the scenario; the authors' path adds its LM head over every position."""
    model = subject.model
    shape = ModelShape.of(model)
    flops = count_flops(shape, model.config.num_images, kept if scenario.pruned else None, prompt_tokens,
                        model.proprio_projector is not None, scenario.pruned).as_dict()
    if scenario.path == "authors":
        flops["lm_head"] = 2.0 * sequence_length * model.config.llm_dim * subject.authors.lm_head_rows
        flops["total"] += flops["lm_head"]
    return flops


def run(subject: Subject, inputs: Inputs, scenarios: list[Scenario], reps: int, warmup: int,
        progress: Callable[[str], None] = lambda line: None) -> list[ScenarioResult]:
    """Round-robin timing of every scenario; returns per-round samples (warm-up rounds dropped)."""
    results: dict[str, ScenarioResult] = {}
    original = subject.model.pruner, subject.model.pruning
    try:
        for round_index in range(warmup + reps):
            round_start = time.perf_counter()
            for scenario in scenarios:
                subject.configure(scenario)
                measure = _measure_authors if scenario.path == "authors" else _measure_ours
                sample, kept, length = measure(subject, inputs)
                sample["other"] = sample["forward"] - sum(sample.get(s, 0.0) for s in (*STAGES, "lm_head"))
                if scenario.count is not None and kept != scenario.count:
                    raise RuntimeError(f"scenario {scenario.name} kept {kept} tokens, expected {scenario.count}")
                result = results.get(scenario.name)
                if result is None:
                    flops = scenario_flops(subject, scenario, kept, length, inputs.prompt_tokens)
                    result = results[scenario.name] = ScenarioResult(scenario, kept, length, flops)
                elif (kept, length) != (result.kept, result.sequence_length):
                    raise RuntimeError(f"scenario {scenario.name} changed its kept count between rounds")
                if round_index >= warmup:
                    for key, value in sample.items():
                        result.samples.setdefault(key, []).append(value)
            label = "warm-up" if round_index < warmup else "round"
            number = round_index + 1 if round_index < warmup else round_index - warmup + 1
            total = warmup if round_index < warmup else reps
            progress(f"{label} {number}/{total}: {time.perf_counter() - round_start:.1f} s")
    finally:
        subject.model.pruner, subject.model.pruning = original
    return [results[s.name] for s in scenarios]


def paired_ratio(numerator: ScenarioResult, denominator: ScenarioResult, key: str) -> Summary:
    """Per-round ratio of two scenarios' measurements (same round = same machine conditions)."""
    a, b = numerator.samples[key], denominator.samples[key]
    return Summary.of([x / y for x, y in zip(a, b)])

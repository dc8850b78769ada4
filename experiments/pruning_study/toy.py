"""A procedural reaching task for proving, on a CPU, that learned pruning keeps the tokens that matter.

A 64x64 top-down scene holds four shapes (cube, bowl, cup, plate) on a textured table and a gripper marker. The
instruction names one object ("reach the red cube"); the other three are distractors. Two variants:

- ``distinct``: the named object is vivid red, green, blue or yellow; the distractors are pale (30% contrast)
  objects of the same colours and shapes, so the object that matters can be told by its appearance;
- ``confusable``: every object is coloured and half the time a distractor shares the named object's colour or
  shape, so only the instruction tells them apart (word-object binding).

The robot state is the gripper's (x, y) position; an action is a (dx, dy) step. The expert covers half the
remaining distance per step (bounded), so the correct action depends only on the gripper and the named object. A
reach succeeds when, after ``EPISODE_STEPS`` steps, the gripper is over the named object.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from lightvla_ros.model.checkpoint import save_checkpoint
from lightvla_ros.model.configuration import PruningConfig, VLAConfig
from lightvla_ros.model.presets import random_model
from lightvla_ros.model.processing import DEFAULT_MEANS, DEFAULT_STDS
from lightvla_ros.model.tiny import make_tokenizer
from lightvla_ros.training.data import Episode

IMAGE_SIZE = 64
PATCH_SIZE = 16  # 4x4 = 16 visual tokens
TARGET_COLOURS = ("red", "green", "blue", "yellow")
_VIVID = {"red": (215, 40, 40), "green": (40, 170, 60), "blue": (45, 75, 225), "yellow": (225, 205, 35)}
PALE_CONTRAST = 0.3  # pale distractors: this fraction of the vivid colour over a mid-grey
COLOURS: dict[str, tuple[int, int, int]] = {
    **_VIVID,
    **{f"pale {c}": tuple(int(PALE_CONTRAST * v + (1 - PALE_CONTRAST) * 130) for v in rgb) for c, rgb in _VIVID.items()},
}
DISTRACTOR_COLOURS = tuple(f"pale {c}" for c in TARGET_COLOURS)
VARIANTS = ("distinct", "confusable")
SHAPES = ("cube", "bowl", "cup", "plate")  # drawn as a square, a disc, a triangle and a ring
NUM_OBJECTS = 4
OBJECT_RADIUS = 0.085  # half-size of an object, in scene units (the scene is the unit square)
MIN_SEPARATION = 0.26
GAIN = 0.5  # the expert covers this fraction of the remaining distance per step
MAX_STEP = 0.5  # largest |dx| and |dy| of one action
EPISODE_STEPS = 4  # one chunk; the expert ends within 1/16 of its start distance (< SUCCESS_RADIUS)
MIN_PATCH_COVER = 0.08  # an object drawn on this fraction of a patch (20 of 256 px) names it in pre-training
SUCCESS_RADIUS = 0.08  # ending within this distance of the named object's centre (inside it) counts as a reach
ACTION_DIM = 2  # dx, dy
STATE_DIM = 2  # x, y


@dataclass(frozen=True)
class ToyObject:
    colour: str
    shape: str
    x: float
    y: float


@dataclass(frozen=True)
class ToyScene:
    objects: tuple[ToyObject, ...]
    target: int
    background: tuple[int, int, int]
    texture_seed: int

    @property
    def instruction(self) -> str:
        obj = self.objects[self.target]
        return f"reach the {obj.colour} {obj.shape}"

    @property
    def target_xy(self) -> np.ndarray:
        obj = self.objects[self.target]
        return np.array([obj.x, obj.y])


def sample_scene(rng: np.random.Generator, variant: str = "distinct", num_objects: int = NUM_OBJECTS) -> ToyScene:
    """A random scene of the given variant (see the module docstring) with well separated objects."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown toy variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    target_colour, target_shape = str(rng.choice(TARGET_COLOURS)), str(rng.choice(SHAPES))
    kinds = [(target_colour, target_shape)]
    if variant == "distinct":
        kinds += [(str(rng.choice(DISTRACTOR_COLOURS)), str(rng.choice(SHAPES))) for _ in range(num_objects - 1)]
    else:
        confusers = [(target_colour, s) for s in SHAPES if s != target_shape] + [(c, target_shape) for c in TARGET_COLOURS if c != target_colour]
        others = [(c, s) for c in TARGET_COLOURS for s in SHAPES if c != target_colour and s != target_shape]
        rng.shuffle(confusers)
        rng.shuffle(others)
        kinds += [*confusers[:2], *others][: num_objects - 1]
    positions: list[np.ndarray] = []
    while len(positions) < num_objects:
        p = rng.uniform(0.12, 0.88, 2)
        if all(np.linalg.norm(p - q) >= MIN_SEPARATION for q in positions):
            positions.append(p)
    order = rng.permutation(num_objects)
    objects = tuple(ToyObject(kinds[i][0], kinds[i][1], float(positions[k][0]), float(positions[k][1])) for k, i in enumerate(order))
    target = int(np.flatnonzero(order == 0)[0])
    background = tuple(int(v) for v in rng.integers(100, 160, 3))
    return ToyScene(objects, target, background, int(rng.integers(2**31)))


def render(scene: ToyScene, gripper: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """The scene as an RGB uint8 image (size, size, 3); x grows to the right, y downwards."""
    texture = np.random.default_rng(scene.texture_seed).normal(0.0, 7.0, (size // 8 + 1, size // 8 + 1, 1))
    texture = np.kron(texture, np.ones((8, 8, 1)))[:size, :size]
    image = np.clip(np.asarray(scene.background, np.float64) + texture, 0, 255)
    centres = (np.arange(size) + 0.5) / size
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    r = OBJECT_RADIUS
    for obj in scene.objects:
        dx, dy = xs - obj.x, ys - obj.y
        if obj.shape == "cube":
            mask = (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
        elif obj.shape == "bowl":
            mask = dx**2 + dy**2 <= r**2
        elif obj.shape == "cup":
            mask = (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
        else:
            d2 = dx**2 + dy**2
            mask = (d2 <= r**2) & (d2 >= (0.5 * r) ** 2)
        image[mask] = COLOURS[obj.colour]
    gx, gy = float(gripper[0]), float(gripper[1])
    arm = 0.045
    cross = ((np.abs(xs - gx) <= 0.012) & (np.abs(ys - gy) <= arm)) | ((np.abs(ys - gy) <= 0.012) & (np.abs(xs - gx) <= arm))
    image[cross] = (245, 245, 245)
    return image.astype(np.uint8)


def expert_action(target: np.ndarray, gripper: np.ndarray) -> np.ndarray:
    """Cover half the remaining distance to the target, at most ``MAX_STEP`` per axis."""
    return np.clip(GAIN * (target - gripper), -MAX_STEP, MAX_STEP)


def random_start(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.05, 0.95, 2)


def expert_trajectory(scene: ToyScene, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The expert's states and actions, (EPISODE_STEPS, STATE_DIM) and (EPISODE_STEPS, ACTION_DIM)."""
    state, states, actions = np.asarray(start, np.float64), [], []
    for _ in range(EPISODE_STEPS):
        action = expert_action(scene.target_xy, state)
        states.append(state)
        actions.append(action)
        state = state + action
    return np.asarray(states, np.float32), np.asarray(actions, np.float32)


def make_episode(rng: np.random.Generator, name: str, variant: str = "distinct") -> Episode:
    """One expert demonstration of ``EPISODE_STEPS`` steps in a fresh random scene from a random start."""
    scene = sample_scene(rng, variant)
    states, actions = expert_trajectory(scene, random_start(rng))
    images = [render(scene, state) for state in states]
    return Episode(
        instruction=scene.instruction,
        images=[np.stack(images)],
        states=states,
        actions=actions,
        name=name,
    )


def make_episodes(count: int, seed: int, variant: str = "distinct") -> list[Episode]:
    rng = np.random.default_rng(seed)
    return [make_episode(rng, f"toy-{seed}-{i}", variant) for i in range(count)]


# (images per scene, instructions, states (S, STATE_DIM)) -> action chunks (S, chunk_len, ACTION_DIM), un-normalised
BatchPolicy = Callable[[list[list[np.ndarray]], list[str], np.ndarray], np.ndarray]


@dataclass
class Rollout:
    success: bool
    final_distance: float


def rollout(policy: BatchPolicy, scenes: list[ToyScene], starts: np.ndarray, steps: int = EPISODE_STEPS) -> list[Rollout]:
    """Execute predicted chunks open-loop in every scene at once, re-planning after each chunk, for ``steps``
    steps. Success: the gripper ends within ``SUCCESS_RADIUS`` of the named object."""
    states = np.asarray(starts, np.float64).copy()
    done = 0
    while done < steps:
        images = [[render(scene, state)] for scene, state in zip(scenes, states)]
        chunks = policy(images, [scene.instruction for scene in scenes], states.astype(np.float32))
        for action in np.moveaxis(chunks, 1, 0)[: steps - done]:
            states = np.clip(states + np.clip(action, -MAX_STEP, MAX_STEP), 0.0, 1.0)
            done += 1
    distances = [float(np.linalg.norm(state - scene.target_xy)) for scene, state in zip(scenes, states)]
    return [Rollout(d <= SUCCESS_RADIUS, d) for d in distances]


def patch_cover(scene: ToyScene, grid: int) -> np.ndarray:
    """(num_objects, grid*grid): the fraction of each patch (row-major) covered by each object's drawn pixels."""
    image = render(ToyScene(scene.objects, scene.target, (0, 0, 0), scene.texture_seed), np.array([-1.0, -1.0]))
    cell = IMAGE_SIZE // grid
    centres = (np.arange(IMAGE_SIZE) + 0.5) / IMAGE_SIZE
    cover = []
    for obj in scene.objects:
        near = (np.abs(centres[None, :] - obj.x) <= OBJECT_RADIUS) & (np.abs(centres[:, None] - obj.y) <= OBJECT_RADIUS)
        drawn = near & (image.max(-1) > 60)
        cover.append(drawn.reshape(grid, cell, grid, cell).mean(axis=(1, 3)).reshape(-1))
    return np.stack(cover)


def patch_labels(scene: ToyScene, grid: int) -> np.ndarray:
    """Per patch (row-major grid x grid): 1 where the named object is drawn, 2 where only a distractor is, 0 elsewhere."""
    cover = patch_cover(scene, grid) > 0
    labels = np.where(cover.any(axis=0), 2, 0)
    labels[cover[scene.target]] = 1
    return labels


def kind_index(obj: ToyObject) -> int:
    """The (colour, shape) class of an object in pre-training: 1 + colour * len(SHAPES) + shape (0 is the table)."""
    return 1 + list(COLOURS).index(obj.colour) * len(SHAPES) + SHAPES.index(obj.shape)


def patch_classes(scene: ToyScene, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Per patch: 0 for the table, else 1 + the (colour, shape) kind of the object covering most of it (at least
    ``MIN_PATCH_COVER``);
    and (grid*grid, 2) where that object's centre is (the patch's own centre on the table), in [-1, 1]."""
    cover = patch_cover(scene, grid)
    kinds = np.array([kind_index(o) for o in scene.objects])
    on_object = cover.max(axis=0) >= MIN_PATCH_COVER
    ys, xs = np.meshgrid((np.arange(grid) + 0.5) / grid, (np.arange(grid) + 0.5) / grid, indexing="ij")
    centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
    objects = np.array([[o.x, o.y] for o in scene.objects])[cover.argmax(axis=0)]
    return np.where(on_object, kinds[cover.argmax(axis=0)], 0), np.where(on_object[:, None], objects, centres) * 2 - 1


def pretrain_vision(checkpoint: str | Path, steps: int, seed: int, variant: str = "distinct", batch_size: int = 32,
                    lr: float = 2e-3, pool: int = 2000) -> list[float]:
    """Give the toy model what OpenVLA-OFT inherits from its VLM: a pretrained vision encoder whose projected patch
    tokens live in the language model's word-embedding space.

    From random scenes, the ViT and projector learn per patch which kind of object (colour x shape) covers it and
    where that object (or the patch, on the table) is (the DINOv2/SigLIP part), and, with the word embeddings, to sit near the words that name it:
    a vivid object's patches near its colour word, every object's patches near its shape word, with the cosine
    geometry the pruner scores with (the part the VLM's vision-language pre-training plays). The linear probes are
    then discarded and the checkpoint is rewritten in place. Nothing here sees instructions or actions. Returns the
    loss per step.
    """
    from tokenizers import Tokenizer

    from lightvla_ros.model.checkpoint import load_model
    from lightvla_ros.model.processing import ImageProcessor
    from lightvla_ros.model.pruning import weightless_rms_norm

    model, files = load_model(checkpoint, PruningConfig("none"))
    processor = ImageProcessor.from_file(files.preprocessor, model.config.vision.num_featurizers)
    tokenizer = Tokenizer.from_file(str(files.tokenizer))
    colour_words = torch.tensor([tokenizer.token_to_id(f"\u2581{c}") for c in TARGET_COLOURS])
    shape_words = torch.tensor([tokenizer.token_to_id(f"\u2581{s}") for s in SHAPES])
    grid = int(round(model.vision_backbone.patches_per_image ** 0.5))
    torch.manual_seed(seed)
    classify = torch.nn.Linear(model.config.llm_dim, 1 + len(COLOURS) * len(SHAPES))
    locate = torch.nn.Linear(model.config.llm_dim, 2)
    embeddings = model.llm.embed_tokens
    modules = [model.vision_backbone, model.projector, classify, locate, embeddings]
    optimizer = torch.optim.AdamW([p for m in modules for p in m.parameters()], lr=lr)
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, variant) for _ in range(pool)]
    pixels = torch.stack([processor([render(scene, random_start(rng))]) for scene in scenes])
    kinds, where = (torch.from_numpy(np.stack(x)) for x in zip(*(patch_classes(scene, grid) for scene in scenes)))
    where = where.float()
    colour = (kinds - 1) // len(SHAPES)  # index into COLOURS: the vivid colours come first
    colour_label = torch.where((kinds > 0) & (colour < len(TARGET_COLOURS)), colour, -100)
    shape_label = torch.where(kinds > 0, (kinds - 1) % len(SHAPES), -100)
    scale = model.config.llm_dim ** -0.5
    losses = []
    model.train()
    for _ in range(steps):
        batch = torch.from_numpy(rng.choice(pool, batch_size, replace=False))
        features = model.projector(model.vision_backbone(pixels[batch], 1).features)
        loss = torch.nn.functional.cross_entropy(classify(features).flatten(0, 1), kinds[batch].flatten())
        loss = loss + (locate(features) - where[batch]).pow(2).mean()
        patches = weightless_rms_norm(features).flatten(0, 1)
        for words, labels in ((colour_words, colour_label), (shape_words, shape_label)):
            logits = patches @ weightless_rms_norm(embeddings(words)).T * scale
            loss = loss + torch.nn.functional.cross_entropy(logits, labels[batch].flatten(), ignore_index=-100)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    save_checkpoint(model, checkpoint, step=0, source=files, weights_dtype=torch.float32)
    return losses


def toy_config(prefix_token_id: int, vocab_size: int) -> VLAConfig:
    """The toy model: one 64 px camera cut into 4x4 patches of 16 px (16 visual tokens), a DINOv2-architecture ViT
    of width 48 (features from its second of three blocks), a 3-layer Llama of width 64 with two heads of 32 (wide
    heads leave RoPE enough slowly rotating channels to match content), and 4-step chunks of (dx, dy).
    Same classes, file layout and pruning code as the 7B model, scaled down."""
    return VLAConfig.from_dict({
        "model_type": "openvla",
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m"],
        "timm_model_kwargs": [{"embed_dim": 48, "depth": 3, "num_heads": 3, "patch_size": PATCH_SIZE}],
        "image_sizes": [IMAGE_SIZE],
        "timm_override_act_layers": [None],
        "use_fused_vision_backbone": False,
        "image_resize_strategy": "resize-naive",
        "pad_token_id": 3,
        "text_config": {"model_type": "llama", "vocab_size": -(-vocab_size // 64) * 64, "hidden_size": 64, "intermediate_size": 128,
                        "num_hidden_layers": 3, "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 256,
                        "rms_norm_eps": 1e-5, "pad_token_id": 3, "bos_token_id": 1, "eos_token_id": 2},
        "lightvla": {"num_images": 1, "proprio_dim": STATE_DIM, "action_dim": ACTION_DIM, "chunk_len": 4, "stop_token_id": 2,
                     "action_prefix_token_id": prefix_token_id},
    })


def sincos_position_embedding(grid: int, dim: int) -> torch.Tensor:
    """A 2-D sine/cosine embedding (grid*grid, dim): x in the first half of the channels, y in the second. The
    lowest frequency spans a quarter period across the grid (monotonic, easy to read out), the highest ~ one patch."""
    count = dim // 4
    freqs = (math.pi / (2 * grid)) * (2.0 * grid) ** (torch.arange(count) / max(count - 1, 1))
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    x, y = xs.flatten()[:, None] * freqs, ys.flatten()[:, None] * freqs
    return torch.cat([torch.sin(x), torch.cos(x), torch.sin(y), torch.cos(y)], dim=-1)


def make_toy_checkpoint(out_dir: str | Path, seed: int = 0) -> Path:
    """A randomly initialised toy model in the release layout (with its own tokenizer), ready for ``lightvla train``.

    The ViT's position embeddings start as a 2-D sine/cosine table instead of near-zero noise: trained from
    scratch, a ViT needs thousands of steps to grow usable position codes, and this task is about positions.
    """
    from tokenizers import Tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = make_tokenizer(out / "tokenizer.json")
    prefix = Tokenizer.from_file(str(out / "tokenizer.json")).token_to_id("\u2581")
    config = toy_config(prefix, vocab)
    model = random_model(config, seed=seed)
    vit = model.vision_backbone.featurizer
    grid = int(round(vit.patch_embed.num_patches ** 0.5))
    with torch.no_grad():
        vit.pos_embed[0, -grid * grid :] = sincos_position_embedding(grid, vit.pos_embed.shape[-1])
    (out / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "PrismaticImageProcessor", "image_resize_strategy": "resize-naive",
        "input_sizes": [[3, IMAGE_SIZE, IMAGE_SIZE]], "interpolations": ["bicubic"],
        "means": [list(DEFAULT_MEANS[0])], "stds": [list(DEFAULT_STDS[0])], "use_fused_vision_backbone": False}, indent=2))
    (out / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
                                                             "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<PAD>"}, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<PAD>"}))
    save_checkpoint(model, out, step=0, weights_dtype=torch.float32)
    return out

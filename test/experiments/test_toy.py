"""The pruning study's procedural reaching task (experiments/pruning_study/toy.py)."""

from __future__ import annotations

import numpy as np
import torch

from experiments.pruning_study import toy


def _scenes(count: int, seed: int) -> tuple[list[toy.ToyScene], np.ndarray]:
    rng = np.random.default_rng(seed)
    scenes = [toy.sample_scene(rng) for _ in range(count)]
    return scenes, np.stack([toy.random_start(rng) for _ in scenes])


def test_the_expert_reaches_every_named_object_and_standing_still_rarely_does():
    scenes, starts = _scenes(100, seed=0)

    def expert(images, instructions, states):  # cheats: reads the scenes, not the images
        return np.stack([toy.expert_trajectory(scene, state)[1] for scene, state in zip(scenes, states)])

    def still(images, instructions, states):
        return np.zeros((len(states), 4, toy.ACTION_DIM))

    assert all(r.success for r in toy.rollout(expert, scenes, starts))
    assert np.mean([r.success for r in toy.rollout(still, scenes, starts)]) < 0.1


def test_an_episode_is_one_chunk_of_expert_steps_towards_the_vivid_named_object():
    episode = toy.make_episodes(1, seed=3)[0]
    assert episode.images[0].shape == (toy.EPISODE_STEPS, toy.IMAGE_SIZE, toy.IMAGE_SIZE, 3)
    assert episode.states.shape == (toy.EPISODE_STEPS, toy.STATE_DIM)
    assert episode.actions.shape == (toy.EPISODE_STEPS, toy.ACTION_DIM)
    colour, shape = episode.instruction.removeprefix("reach the ").split(" ")
    assert colour in toy.TARGET_COLOURS and shape in toy.SHAPES
    np.testing.assert_allclose(episode.states[1:], episode.states[:-1] + episode.actions[:-1], atol=1e-6)
    distances = np.linalg.norm(episode.actions, axis=1)
    assert np.all(distances[1:] < distances[:-1])  # half of the remaining distance per step


def test_patch_labels_follow_the_drawn_objects():
    scene, _ = _scenes(1, seed=5)
    scene = scene[0]
    grid = toy.IMAGE_SIZE // toy.PATCH_SIZE
    kinds, centres = toy.patch_classes(scene, grid)
    labels = toy.patch_labels(scene, grid)
    target = scene.objects[scene.target]
    col = min(int(target.x * grid), grid - 1)
    row = min(int(target.y * grid), grid - 1)
    assert labels[row * grid + col] == 1  # the patch under the named object's centre
    assert kinds[row * grid + col] == toy.kind_index(target)
    np.testing.assert_allclose(centres[row * grid + col], np.array([target.x, target.y]) * 2 - 1, atol=1e-6)
    assert (labels == 0).sum() > 0 and centres.min() >= -1 and centres.max() <= 1


def test_vision_language_pretraining_puts_patches_near_the_words_that_name_them(tmp_path):
    """After pre-training, a vivid object's patch tokens are closer (cosine) to its colour word than to the others:
    the geometry LightVLA's parameter-free queries work with."""
    from tokenizers import Tokenizer

    from lightvla_ros.model.checkpoint import load_model
    from lightvla_ros.model.configuration import PruningConfig
    from lightvla_ros.model.processing import ImageProcessor

    checkpoint = toy.make_toy_checkpoint(tmp_path / "toy", seed=0)
    torch.manual_seed(0)
    losses = toy.pretrain_vision(checkpoint, steps=120, seed=0)
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    model, files = load_model(checkpoint, PruningConfig("none"))
    processor = ImageProcessor.from_file(files.preprocessor, 1)
    tokenizer = Tokenizer.from_file(str(files.tokenizer))
    words = model.llm.embed_tokens(torch.tensor([tokenizer.token_to_id(f"\u2581{c}") for c in toy.TARGET_COLOURS]))
    scenes, starts = _scenes(20, seed=99)
    grid = toy.IMAGE_SIZE // toy.PATCH_SIZE
    right = 0
    with torch.no_grad():
        pixels = torch.stack([processor([toy.render(scene, start)]) for scene, start in zip(scenes, starts)])
        features = model.projector(model.vision_backbone(pixels, 1).features)
        similarity = torch.nn.functional.normalize(features, dim=-1) @ torch.nn.functional.normalize(words, dim=-1).T
    for scene, sims in zip(scenes, similarity):
        kinds, _ = toy.patch_classes(scene, grid)
        target = scene.objects[scene.target]
        on_target = kinds == toy.kind_index(target)
        colour = toy.TARGET_COLOURS.index(target.colour)
        right += int(sims[torch.from_numpy(on_target)].mean(0).argmax()) == colour
    assert right >= 16, f"{right} of 20 named objects closest to their colour word"

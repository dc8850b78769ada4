"""The token-filter hook: training-free pruners drop visual tokens at the input of one LLM layer."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from lightvla_ros.model.configuration import PruningConfig
from lightvla_ros.model.errors import InputError
from lightvla_ros.model.modeling import LayerInput
from lightvla_ros.model.presets import random_model, tiny_config


@dataclass
class KeepPatches:
    """Keeps the visual tokens of the given original patches; remembers what it was shown."""

    patches: list[list[int]]
    layer: int = 0
    seen: list[LayerInput] = field(default_factory=list)

    def __call__(self, inputs: LayerInput) -> torch.Tensor:
        self.seen.append(inputs)
        keep = torch.zeros_like(inputs.visual_valid)
        for b, patches in enumerate(self.patches):
            keep[b, patches] = True  # no pruning before this layer: slot i holds patch i
        return keep


@pytest.fixture(scope="module")
def model():
    return random_model(tiny_config(448, 5, hidden=32, layers=3), PruningConfig("lightvla")).eval()


@pytest.fixture(scope="module")
def inputs(model):
    generator = torch.Generator().manual_seed(2)
    pixels = torch.randn(2, 12, 224, 224, generator=generator)
    ids = torch.randint(4, 400, (2, 10 + model.config.num_action_slots + 1), generator=generator)
    return pixels, ids, torch.full((2,), ids.shape[1]), torch.randn(2, 8, generator=generator)


def run(model, inputs, method, token_filter=None):
    model.set_pruning(PruningConfig(method))
    with torch.no_grad():
        return model(*inputs, token_filter=token_filter)


def test_a_filter_before_layer_0_keeping_lightvla_s_tokens_reproduces_lightvla(model, inputs):
    """Kept tokens keep their order and original RoPE positions, exactly as with the model's own pruner."""
    pruned = run(model, inputs, "lightvla")
    filtered = run(model, inputs, "none", KeepPatches([k.tolist() for k in pruned.kept_patch_indices]))
    for a, b in zip(pruned.kept_patch_indices, filtered.kept_patch_indices):
        assert torch.equal(a, b)
    assert filtered.sequence_lengths == pruned.sequence_lengths
    torch.testing.assert_close(filtered.normalized_actions, pruned.normalized_actions, atol=1e-5, rtol=1e-4)


def test_a_filter_keeping_everything_changes_nothing(model, inputs):
    full = run(model, inputs, "none")
    kept_all = run(model, inputs, "none", KeepPatches([list(range(512))] * 2, layer=2))
    torch.testing.assert_close(kept_all.normalized_actions, full.normalized_actions)


def test_a_filter_at_layer_k_sees_that_layer_s_input_and_the_one_before(model, inputs):
    token_filter = KeepPatches([[0, 7, 300], [5]], layer=2)
    out = run(model, inputs, "none", token_filter)
    assert [k.tolist() for k in out.kept_patch_indices] == [[0, 7, 300], [5]]
    (seen,) = token_filter.seen
    assert seen.index == 2 and seen.previous.index == 1 and seen.previous.previous is None
    assert seen.num_visual == 512 and seen.visual_valid.all()
    assert seen.hidden.shape[:2] == (2, 1 + 512 + 1 + inputs[1].shape[1] - 1)
    assert seen.slot_positions.shape == (2, model.config.num_action_slots)
    assert int(seen.slot_positions[0, -1]) == seen.hidden.shape[1] - 1  # "last" readout ends at the stop token


def test_filters_are_refused_in_training_and_outside_the_llm(model, inputs):
    with pytest.raises(InputError, match="layer 3"):
        run(model, inputs, "none", KeepPatches([[0], [0]], layer=3))
    model.train()
    try:
        with pytest.raises(InputError, match="inference only"):
            model(*inputs, token_filter=KeepPatches([[0], [0]]))
    finally:
        model.eval()

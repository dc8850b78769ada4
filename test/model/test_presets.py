"""The preset registry and the one random-model builder."""

from __future__ import annotations

import pytest
import torch

from lightvla_ros.model.configuration import PruningConfig
from lightvla_ros.model.flops import ModelShape, count_flops
from lightvla_ros.model.presets import (
    PRESETS,
    SEVEN_B_SHRINK,
    openvla_oft_7b_config,
    random_model,
    seven_b_shaped_config,
    tiny_config,
)


@pytest.fixture(scope="module")
def shapes():
    return ModelShape.of_config(openvla_oft_7b_config()), ModelShape.of_config(seven_b_shaped_config())


@pytest.mark.parametrize("kept", [None, 16, 78, 256])
def test_seven_b_shaped_preset_keeps_every_stage_share_of_the_7b(shapes, kept):
    reference = count_flops(shapes[0], 2, kept, pruned=kept is not None)
    scaled = count_flops(shapes[1], 2, kept, pruned=kept is not None)
    factor = SEVEN_B_SHRINK ** 2
    for stage in ("vision", "projector", "llm", "head"):
        assert getattr(scaled, stage) * factor == pytest.approx(getattr(reference, stage), rel=0.015), stage
    if kept is not None:  # the pruner scales with width only (its share grows by the shrink factor)
        assert scaled.pruner * factor == pytest.approx(reference.pruner * SEVEN_B_SHRINK, rel=1e-6)
        assert scaled.pruner / scaled.total < 0.011
    assert scaled.sequence_length == reference.sequence_length


def test_every_preset_has_the_release_token_layout():
    for name, preset in PRESETS.items():
        config = preset.make_config(448, 5)
        assert (config.num_patches, config.num_action_slots, config.proprio_dim) == (512, 56, 8), name
        assert config.action_prefix_token_id == 5, name
    assert [name for name, preset in PRESETS.items() if not preset.cpu_ok] == ["7b"]


def test_random_model_is_reproducible_from_its_seed():
    config = tiny_config(448, 5, hidden=32, layers=2)
    a, b, c = random_model(config, seed=3), random_model(config, seed=3), random_model(config, seed=4)
    for (name, x), y, z in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(x, y), name
    assert any(not torch.equal(x, z) for x, z in zip(a.state_dict().values(), c.state_dict().values()))


def test_random_model_is_created_in_the_requested_dtype_with_float32_proprio_and_rope():
    model = random_model(tiny_config(448, 5, hidden=32, layers=2), PruningConfig("none"), dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16 and model.vision_backbone.featurizer.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert model.proprio_projector.fc1.weight.dtype == torch.float32
    assert model.llm.rotary_emb.inv_freq.dtype == torch.float32
    assert model.pruning.method == "none"
    assert torch.get_default_dtype() == torch.float32  # restored

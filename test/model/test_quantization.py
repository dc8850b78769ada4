"""Weight-only quantization: which layers, how many bytes, what runs where, and the policy/node settings around it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightvla_ros.contract import PolicySettings
from lightvla_ros.model.configuration import QUANTIZE_MODES
from lightvla_ros.model.errors import InputError
from lightvla_ros.model.presets import random_model, tiny_config
from lightvla_ros.model.quantization import (
    Quantization,
    linear_weight_bytes,
    planned_weight_bytes,
    quantize_model,
    stored_bytes,
    weight_bytes,
)
from lightvla_ros.policy import LightVLAPolicy

pytest.importorskip("torchao")
CPU_MODES = ("int8", "int4-g32", "fp8")


def _inputs(config, batch=2):
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(batch, 12, 224, 224, generator=generator)
    ids = torch.randint(4, 400, (batch, 12 + config.num_action_slots + 1), generator=generator)
    return pixels, ids, torch.full((batch,), ids.shape[1]), torch.randn(batch, 8, generator=generator)


@pytest.fixture(scope="module")
def tiny():
    config = tiny_config(448, 5, hidden=64, layers=2)
    return config, random_model(config).eval()


def test_modes_parse_with_int4_defaulting_to_groups_of_128():
    assert Quantization.parse("int4") == Quantization("int4", 128)
    assert Quantization.parse("int4-g32").group_size == 32
    assert Quantization.parse("int8") == Quantization("int8")
    assert all(Quantization.parse(mode).mode in QUANTIZE_MODES for mode in QUANTIZE_MODES)
    with pytest.raises(InputError, match="quantize must be one of"):
        Quantization.parse("int3")


@pytest.mark.parametrize("mode", CPU_MODES)
def test_only_llm_decoder_and_projector_linears_are_quantized(tiny, mode):
    config, model = tiny
    quantized = model.__class__(config).eval()
    quantized.load_state_dict(model.state_dict())
    layers = quantize_model(quantized, mode)
    assert layers and all(name.startswith(("llm.layers.", "projector.")) for name in layers)
    assert type(quantized.llm.layers[0].self_attn.q_proj.weight) is not torch.nn.Parameter
    assert type(quantized.action_head.model.fc1.weight) is torch.nn.Parameter
    assert type(quantized.vision_backbone.featurizer.blocks[0].attn.qkv.weight) is torch.nn.Parameter
    assert weight_bytes(quantized) < weight_bytes(model)
    with torch.no_grad():
        expected, out = model(*_inputs(config)), quantized(*_inputs(config))
    assert torch.isfinite(out.normalized_actions).all()
    if mode == "int8":  # the other modes' errors are measured, not bounded here (docs/performance.md)
        assert (out.normalized_actions - expected.normalized_actions).abs().max() < 0.1


def test_cpu_int4_leaves_layers_without_whole_groups_alone(tiny):
    config, model = tiny
    quantized = model.__class__(config).eval()
    quantized.load_state_dict(model.state_dict())
    layers = quantize_model(quantized, "int4-g128")  # LLM width 64, projector 96 -> 384 -> 64: 256 and 384 inputs
    assert set(layers) == {"projector.fc2", "llm.layers.0.mlp.down_proj", "llm.layers.1.mlp.down_proj"}


@pytest.mark.parametrize("mode", ("none", *CPU_MODES))
def test_byte_formulas_match_what_torchao_stores_on_the_cpu(mode):
    layer = torch.nn.Linear(256, 48, bias=False)
    model = torch.nn.Module()
    model.projector = torch.nn.Sequential(layer)
    model.device, model.dtype = torch.device("cpu"), torch.float32
    quantize_model(model, mode)
    assert stored_bytes(model.projector[0].weight) == linear_weight_bytes(48, 256, mode, 4, "cpu")


def test_planned_bytes_of_a_model_equal_its_bytes_once_quantized(tiny):
    config, model = tiny
    for mode in CPU_MODES:
        quantized = model.__class__(config).eval()
        quantized.load_state_dict(model.state_dict())
        quantize_model(quantized, mode)
        assert planned_weight_bytes(model, mode, 4, "cpu") == weight_bytes(quantized), mode


def test_cuda_int4_packs_two_weights_per_byte_with_padded_inputs():
    # Llama-2-7B's MLP down projection: 11008 inputs padded to 11264, bf16 scale + zero per group of 128
    assert linear_weight_bytes(4096, 11008, "int4", 2, "cuda") == 4096 * 11264 // 2 + 4096 * (11264 // 128) * 4


def test_modes_a_gpu_cannot_run_are_refused_with_the_reason(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 7))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Orin")
    cuda = torch.device("cuda", 0)
    assert "fp8" in Quantization.parse("fp8").problem(cuda, torch.bfloat16)
    assert "bfloat16" in Quantization.parse("int4").problem(cuda, torch.float16)
    assert Quantization.parse("int4").problem(cuda, torch.bfloat16) == ""
    assert Quantization.parse("int8").problem(cuda, torch.float16) == ""
    assert Quantization.parse("fp8").problem(torch.device("cpu"), torch.float32) == ""


# ----------------------------------------------------------------------------------------- policy and node settings
def _observation(policy):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(policy.num_images)]
    return images, "put the bowl on the plate", np.zeros(policy.proprio_dim)


def test_policy_quantizes_at_load(random_tiny_checkpoint):
    plain = LightVLAPolicy.from_checkpoint(random_tiny_checkpoint, device="cpu")
    policy = LightVLAPolicy.from_settings(PolicySettings(str(random_tiny_checkpoint), device="cpu", quantize="int8"))
    assert policy.quantize == "int8" and policy.quantized_layers
    expected, out = plain.predict(*_observation(plain)), policy.predict(*_observation(policy))
    np.testing.assert_allclose(out.normalized_actions, expected.normalized_actions, atol=0.2)


def test_buckets_and_compile_from_the_settings_leave_results_unchanged(random_tiny_checkpoint):
    plain = LightVLAPolicy.from_checkpoint(random_tiny_checkpoint, device="cpu")
    fast = LightVLAPolicy.from_settings(PolicySettings(
        str(random_tiny_checkpoint), device="cpu", compile_mode="default", compile_backend="eager",
        kept_token_buckets=(16, 600), sdpa_backend="math"))
    assert fast.model.kept_token_buckets == (16, 600)
    expected, out = plain.predict(*_observation(plain)), fast.predict(*_observation(fast))
    np.testing.assert_array_equal(out.kept_patch_indices, expected.kept_patch_indices)
    np.testing.assert_allclose(out.normalized_actions, expected.normalized_actions, atol=1e-5, rtol=1e-4)


def test_warmup_runs_one_forward_per_bucket_then_restores_pruning(random_tiny_checkpoint, monkeypatch):
    policy = LightVLAPolicy.from_settings(PolicySettings(str(random_tiny_checkpoint), device="cpu",
                                                        kept_token_buckets=(8, 64, 1000)))
    policy.set_pruning("none", None)
    pruner = policy.model.pruner
    seen = []
    original = policy.predict_batch

    def record(observations):
        outputs = original(observations)
        seen.append(outputs[0].num_kept)
        return outputs

    monkeypatch.setattr(policy, "predict_batch", record)
    policy.warmup(iterations=1)
    assert seen == [512, 8, 64, 512]  # the configured pruning first, then each bucket (capped at all patches)
    assert policy.model.pruner is pruner and policy.pruning == "none"


def test_attention_backends_that_need_cuda_are_refused_on_the_cpu(random_tiny_checkpoint):
    with pytest.raises(InputError, match="needs CUDA"):
        LightVLAPolicy.from_checkpoint(random_tiny_checkpoint, device="cpu", sdpa_backend="efficient")
    with pytest.raises(InputError, match="sdpa_backend"):
        LightVLAPolicy.from_checkpoint(random_tiny_checkpoint, device="cpu", sdpa_backend="fastest")


def test_predict_command_quantizes_the_golden_fixture(reference_fixture, reference_golden, capsys):
    import json

    from lightvla_ros.cli import main

    case = reference_golden["cases"][0]
    argv = ["predict", "--checkpoint", str(reference_fixture), "--instruction", case["instruction"], "--device", "cpu",
            "--preprocessing", "plain", "--proprio", ",".join(map(str, case["proprio_raw"])), "--quantize", "int8", "--json"]
    for name in case["images"]:
        argv += ["--image", str(reference_fixture / name)]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["quantize"] == "int8" and len(out["actions"]) == 8


def test_node_parameters_reach_the_policy_settings():
    from lightvla_ros.ros.core.params import SPECS, NodeConfig, validate_value

    settings = NodeConfig.from_values({"quantize": "int8", "compile_mode": "reduce-overhead", "kept_token_buckets": [32, 64],
                                       "sdpa_backend": "math", "allocator": "heap"}).policy_settings()
    assert (settings.quantize, settings.compile_mode, settings.kept_token_buckets) == ("int8", "reduce-overhead", (32, 64))
    assert (settings.sdpa_backend, settings.allocator, settings.compile_backend) == ("math", "heap", "inductor")
    assert all(SPECS[name].read_only for name in ("quantize", "compile_mode", "kept_token_buckets", "sdpa_backend"))
    assert validate_value(SPECS["quantize"], "int3")


def test_unknown_compile_backends_and_nonpositive_buckets_are_refused():
    from lightvla_ros.model.acceleration import Acceleration

    with pytest.raises(InputError, match="compile backend"):
        Acceleration.for_mode("default", backend="tensorrt")
    with pytest.raises(InputError, match="positive"):
        Acceleration.for_mode("none", (0, 64))

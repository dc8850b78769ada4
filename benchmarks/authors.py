"""The authors' inference path (OpenVLA-OFT ``get_vla_action`` + ``predict_action`` as LightVLA releases it),
re-enacted on this project's modules so that the two paths differ only in the work the reference does extra.

Per call the reference:

1. runs its processor once per camera image, each time re-tokenising the prompt with the Hugging Face tokenizer;
2. appends token 29871 after checking the last id, builds fake labels and the action masks from them, and
   gathers the non-action embeddings (its FiLM input) even when FiLM is off;
3. runs the Llama through ``LlamaForCausalLM``: every layer's hidden state is kept (``output_hidden_states``),
   RoPE is recomputed in every layer (transformers 4.40), and the LM head is applied to every position and the
   logits upcast to float32, although the L1 head never reads them;
4. reads the last 56 states of ``hidden_states[-1]``, applies the head, reshapes to the chunk, copies to numpy.

Shared with our path: the image preprocessing itself, the ViTs, projector, pruner and decoder-layer kernels.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from lightvla_ros.model.modeling import LightVLAForActionPrediction, StageTimer
from lightvla_ros.model.processing import PROMPT_TEMPLATE, ImageProcessor, Normalizer
from lightvla_ros.model.pruning import select

IGNORE_INDEX = -100
ACTION_TOKEN_BEGIN_IDX = 31743  # the reference's action-token range starts above this id
PLACEHOLDER_ID = 1  # the reference's placeholder id for the action slots (their embeddings are zeroed)


@contextlib.contextmanager
def _untimed(name: str) -> Iterator[None]:
    yield


class AuthorsPath:
    """``predict`` = the reference's per-call work, timed per stage like our forward (plus ``lm_head``)."""

    def __init__(self, model: LightVLAForActionPrediction, tokenizer_file: Path, processor: ImageProcessor,
                 normalizer: Normalizer, lm_head_weight: torch.Tensor) -> None:
        from transformers import PreTrainedTokenizerFast

        self.model = model
        self.tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), bos_token="<s>", eos_token="</s>")
        self.processor = processor
        self.normalizer = normalizer
        self.lm_head = nn.Linear(lm_head_weight.shape[1], lm_head_weight.shape[0], bias=False,
                                 device=model.device, dtype=model.dtype)
        with torch.no_grad():
            self.lm_head.weight.copy_(lm_head_weight)

    @property
    def lm_head_rows(self) -> int:
        return self.lm_head.out_features

    def preprocess(self, images: Sequence[Any], instruction: str, proprio: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``get_vla_action``: the processor (tokenizer + image transform) once per image, then concatenation."""
        prompt = PROMPT_TEMPLATE.format(instruction=instruction.lower())
        device = self.model.device
        per_image = []
        for image in images:
            input_ids = self.tokenizer(prompt, return_tensors="pt").input_ids
            per_image.append((input_ids.to(device), self.processor([image])[None].to(device, self.model.dtype)))
        input_ids = per_image[0][0]
        pixel_values = torch.cat([p for _, p in per_image], dim=1)
        state = None
        if self.model.proprio_projector is not None:
            state = torch.from_numpy(self.normalizer.normalize_proprio(proprio))[None].to(device)
        return input_ids, pixel_values, state

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, proprio: torch.Tensor | None,
                timer: StageTimer | None = None) -> tuple[np.ndarray, int, int]:
        """``predict_action``: normalised actions (chunk_len, action_dim) as numpy, the kept count and the LLM
        sequence length."""
        stage = timer.stage if timer is not None else _untimed
        model, config = self.model, self.model.config
        prefix = config.action_prefix_token_id
        if prefix is not None and not torch.all(input_ids[:, -1] == prefix):
            input_ids = torch.cat((input_ids, torch.tensor([[prefix]], device=input_ids.device)), dim=1)
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        slots = config.num_action_slots
        placeholders = torch.full((1, slots), PLACEHOLDER_ID, dtype=input_ids.dtype, device=input_ids.device)
        stop = torch.full((1, 1), config.stop_token_id, dtype=input_ids.dtype, device=input_ids.device)
        input_ids = torch.cat([input_ids, placeholders, stop], dim=1)
        attention_mask = torch.ones_like(input_ids)
        labels = torch.cat([labels, torch.full_like(placeholders, ACTION_TOKEN_BEGIN_IDX + 1), stop], dim=1)
        embeddings = model.llm.embed_tokens(input_ids)
        is_label = labels != IGNORE_INDEX
        counted = torch.cumsum(is_label, dim=1)
        action_tokens = labels > ACTION_TOKEN_BEGIN_IDX
        current = action_tokens & (counted >= 1) & (counted <= config.action_dim)
        following = action_tokens & (counted > config.action_dim)
        all_actions = current | following
        embeddings[~all_actions].reshape(1, -1, embeddings.shape[-1])  # the FiLM input, built and unused

        with stage("vision"):
            visual = model.vision_backbone(pixel_values, config.num_images)
        with stage("projector"):
            patches = model.projector(visual.features)
        if model.proprio_projector is not None:
            token = model.proprio_projector(proprio.float()).to(patches.dtype)[:, None]
            patches = torch.cat([patches, token], dim=1)
        embeddings = embeddings * ~all_actions[..., None]
        sequence = torch.cat([embeddings[:, :1], patches, embeddings[:, 1:]], dim=1)
        patch_mask = torch.ones(patches.shape[:2], dtype=attention_mask.dtype, device=patches.device)
        attention_mask = torch.cat([attention_mask[:, :1], patch_mask, attention_mask[:, 1:]], dim=1)

        num_patches = visual.features.shape[1]
        positions = torch.arange(sequence.shape[1], device=sequence.device)[None]
        with stage("pruner"):
            if model.pruning.method != "none":
                patches_only = sequence[:, 1 : 1 + num_patches]
                task = sequence[:, 1 + num_patches :]
                selection = select(model.pruner.scores(patches_only, task, None), straight_through=False,
                                   max_kept=model.pruning.max_kept_tokens)
                keep = torch.cat([torch.ones_like(selection.keep[:, :1]), selection.keep,
                                  torch.ones(task.shape[:2], dtype=torch.bool, device=task.device)], dim=1)
                sequence = sequence[keep].reshape(1, -1, sequence.shape[-1])
                positions = positions[keep].reshape(1, -1)
                attention_mask = attention_mask[keep].reshape(1, -1)
        kept = int(selection.keep.sum()) if model.pruning.method != "none" else num_patches

        with stage("llm"):
            hidden_states: list[torch.Tensor] = []
            hidden = sequence
            for layer in model.llm.layers:
                hidden_states.append(hidden)
                rope = model.llm.rotary_emb(hidden, positions)  # 4.40 recomputes RoPE inside every layer
                hidden = layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=rope, is_causal=False)
            hidden = model.llm.norm(hidden)
            hidden_states.append(hidden)
        with stage("lm_head"):
            self.lm_head(hidden).float()
        with stage("head"):
            actions = model.action_head(hidden_states[-1][:, -slots:])
            actions = actions.reshape(config.chunk_len, config.action_dim).float().cpu().detach().numpy()
        return actions, kept, sequence.shape[1]

    def predict(self, images: Sequence[Any], instruction: str, proprio: Any) -> np.ndarray:
        """The whole reference call: preprocessing, forward and un-normalisation."""
        input_ids, pixel_values, state = self.preprocess(images, instruction, proprio)
        normalized, _, _ = self.forward(input_ids, pixel_values, state)
        return self.normalizer.unnormalize_actions(normalized)

"""The LightVLA network: OpenVLA-OFT (fused ViTs -> projector -> bidirectional Llama -> L1 head) plus pruning.

LLM input per sample (docs/model-notes.md §2-§3): ``[BOS | visual patches | proprio | prompt ... 29871 | action slots | </s>]``.
The action-slot embeddings are zeroed ("parallel decoding"), attention is fully bidirectional (a key-padding
mask only, never causal), kept patches keep their original RoPE positions, and the LM head is never evaluated.

Batches are padded per sample: samples keep different numbers of visual tokens and have prompts of different
lengths, so padding (masked as keys) can sit between a sample's visual and task tokens. Every position and
read-out index is computed per sample, so a batch gives the results of its samples run one by one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Iterator, Protocol, Sequence

import torch
from torch import nn
from transformers import LlamaConfig, LlamaModel
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from lightvla_ros.model.configuration import READOUT_MODES, PruningConfig, VLAConfig
from lightvla_ros.model.errors import InputError
from lightvla_ros.model.heads import FusedGeluProjector, L1RegressionActionHead, ProprioProjector
from lightvla_ros.model.pruning import LearnableQueryPruner, Selection, TokenPruner, VisualTokens, select
from lightvla_ros.model.vision import FusedVisionBackbone


def llama_config(config: VLAConfig) -> LlamaConfig:
    """transformers' LlamaConfig for the checkpoint, pinned to the SDPA kernel (which we call non-causally)."""
    t = config.text
    return LlamaConfig(
        vocab_size=t["vocab_size"],
        hidden_size=t["hidden_size"],
        intermediate_size=t["intermediate_size"],
        num_hidden_layers=t["num_hidden_layers"],
        num_attention_heads=t["num_attention_heads"],
        num_key_value_heads=t["num_key_value_heads"],
        hidden_act=t["hidden_act"],
        max_position_embeddings=t["max_position_embeddings"],
        rms_norm_eps=t["rms_norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": float(t["rope_theta"])},
        attention_bias=t["attention_bias"],
        pad_token_id=config.pad_token_id,
        bos_token_id=t["bos_token_id"],
        eos_token_id=t["eos_token_id"],
        attn_implementation="sdpa",
    )


class StageTimer:
    """Wall-clock milliseconds per stage; synchronises CUDA around each stage so the numbers mean something."""

    def __init__(self, device: torch.device) -> None:
        self.sync = device.type == "cuda"
        self.ms: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        yield
        if self.sync:
            torch.cuda.synchronize()
        self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1e3


@contextlib.contextmanager
def _no_timer(name: str) -> Iterator[None]:
    yield


@dataclass
class VLAOutput:
    normalized_actions: torch.Tensor  # (B, chunk_len, action_dim)
    kept_patch_indices: list[torch.Tensor]  # per sample, ascending original patch indices reaching the LLM layers
    per_query_argmax: torch.Tensor | None  # (B, M) the patch each query picked (None without pruning)
    scores: torch.Tensor | None  # (B, M, N) pruning scores
    sequence_lengths: list[int]  # per sample, the LLM sequence length after pruning
    num_patches: int
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class LayerInput:
    """The input of one LLM decoder layer, as a :class:`TokenFilter` sees it (positions index the sequence)."""

    index: int  # the decoder layer
    hidden: torch.Tensor  # (B, L, D): [BOS | visual slots | task tokens]
    attention_mask: torch.Tensor | None  # (B, 1, 1, L) additive key-padding mask; None without padding
    position_embeddings: tuple[torch.Tensor, torch.Tensor]  # RoPE (cos, sin) at the tokens' original positions
    num_visual: int  # visual slots at positions 1 .. num_visual
    visual_valid: torch.Tensor  # (B, num_visual) bool; False marks padding
    slot_positions: torch.Tensor  # (B, chunk_len * action_dim): the positions the action head reads
    previous: "LayerInput | None"  # the input of the layer before (None at layer 0); its own previous is None


class TokenFilter(Protocol):
    """A training-free pruner hooked into :meth:`LightVLAForActionPrediction.forward`.

    At the input of decoder layer ``layer`` the model calls it with that layer's :class:`LayerInput` and keeps
    the visual tokens it marks. Kept tokens keep their order and original RoPE positions, as with LightVLA's own
    pruner. A filter at layer k can rank tokens by the attention of layer k-1: ``inputs.previous`` holds that
    layer's input, and ``model.llm.layers[k - 1]`` its weights (FastV's rule).
    """

    layer: int

    def __call__(self, inputs: LayerInput) -> torch.Tensor:
        """(B, num_visual) bool: the visual tokens that go on into layer ``layer``."""
        ...


@dataclass
class _Sequence:
    """A padded LLM input: [BOS | visual slots | task tokens] per sample, with key validity and RoPE positions."""

    hidden: torch.Tensor
    positions: torch.Tensor
    valid: torch.Tensor
    visual: VisualTokens
    task_mask: torch.Tensor

    @property
    def num_visual(self) -> int:
        return self.visual.features.shape[1]


class LightVLAForActionPrediction(nn.Module):
    def __init__(self, config: VLAConfig, pruning: PruningConfig | None = None) -> None:
        super().__init__()
        self.config = config
        self.pruning = pruning or PruningConfig()
        self.readout = "last"
        self.kept_token_buckets: tuple[int, ...] = ()
        self.vision_backbone = FusedVisionBackbone(config.vision)
        self.projector = FusedGeluProjector(self.vision_backbone.embed_dim, config.llm_dim)
        self.llm = LlamaModel(llama_config(config))
        if self.llm.config._attn_implementation != "sdpa":
            raise RuntimeError("the LLM must run on the SDPA attention path (called non-causally)")
        for layer in self.llm.layers:
            layer.self_attn.is_causal = False
        self.proprio_projector = ProprioProjector(config.proprio_dim, config.llm_dim) if config.proprio_dim else None
        head_hidden = config.head_hidden_dim or config.llm_dim
        self.action_head = L1RegressionActionHead(config.llm_dim, head_hidden, config.action_dim, config.chunk_len)
        self.pruner = TokenPruner()
        self.star_layout = self.pruning if self.pruning.method == "lightvla_star" else None
        self.star_pruner = self._make_star_pruner() if self.star_layout is not None else None

    # ----------------------------------------------------------------------------------------------- set-up
    def _make_star_pruner(self) -> LearnableQueryPruner:
        p = self.pruning
        if p.star_position == "vision":
            vit = self.vision_backbone.featurizer
            if not 0 <= p.star_vision_block < len(vit.blocks) - 1:
                raise InputError(f"star_vision_block must be in 0..{len(vit.blocks) - 2} for this vision encoder")
            return LearnableQueryPruner(p.star_num_queries, vit.embed_dim, self.config.llm_dim)
        if p.star_llm_layer >= len(self.llm.layers):
            raise InputError(f"star_llm_layer {p.star_llm_layer} but the LLM has {len(self.llm.layers)} layers")
        return LearnableQueryPruner(p.star_num_queries, self.config.llm_dim)

    def set_pruning(self, pruning: PruningConfig) -> None:
        """Switch pruning at run time. LightVLA*'s placement and query count are fixed by its learned queries;
        only its budget and noise can change."""
        if pruning.method == "lightvla_star":
            if self.star_pruner is None:
                raise InputError("this checkpoint has no LightVLA* queries; use pruning 'lightvla' or 'none'")
            pruning = dataclasses.replace(self.star_layout, max_kept_tokens=pruning.max_kept_tokens, noise=pruning.noise)
        self.pruning = pruning

    def add_star_pruner(self, pruning: PruningConfig) -> None:
        """Switch to LightVLA* with freshly initialised queries, to fine-tune a checkpoint that has none."""
        if pruning.method != "lightvla_star":
            raise InputError(f"add_star_pruner needs pruning method 'lightvla_star', got {pruning.method!r}")
        self.pruning = pruning
        self.star_layout = pruning
        self.star_pruner = self._make_star_pruner().to(self.device)

    def set_kept_token_buckets(self, buckets: Sequence[int]) -> None:
        """Pad the pruned visual tokens up to the next bucket size with masked slots (results unchanged), so the
        LLM sees a few fixed sequence lengths, as compiled kernels and CUDA graphs need. Empty: no padding."""
        if any(int(b) < 1 for b in buckets):
            raise InputError(f"kept-token buckets must be positive, got {list(buckets)}")
        self.kept_token_buckets = tuple(sorted({int(b) for b in buckets}))

    def set_readout(self, readout: str) -> None:
        if readout not in READOUT_MODES:
            raise InputError(f"readout must be one of {', '.join(READOUT_MODES)}, got {readout!r}")
        self.readout = readout

    def restore_rope_precision(self) -> None:
        """Recompute RoPE inverse frequencies in float32 (a dtype cast of the whole model rounds them)."""
        with torch.device(self.llm.embed_tokens.weight.device):
            self.llm.rotary_emb = LlamaRotaryEmbedding(self.llm.config)

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.llm.embed_tokens.weight.device

    # ------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        pixel_values: torch.Tensor,
        text_ids: torch.Tensor,
        text_lengths: torch.Tensor,
        proprio: torch.Tensor | None = None,
        *,
        num_images: int | None = None,
        noise_scale: float = 0.0,
        generator: torch.Generator | None = None,
        timer: StageTimer | None = None,
        token_filter: TokenFilter | None = None,
    ) -> VLAOutput:
        """Predict normalised action chunks.

        ``text_ids`` (B, L) right-padded rows ``[BOS, prompt..., 29871, slots..., </s>]`` of ``text_lengths``.
        In training mode (``self.train()``) pruning is the straight-through selection with ``noise_scale``.
        ``token_filter`` (inference only) drops visual tokens at the input of one LLM layer, after this model's own
        pruning: the hook for training-free pruners (see :class:`TokenFilter`).
        """
        stage = timer.stage if timer is not None else _no_timer
        num_images = num_images or self.config.num_images
        straight_through = self.training
        method = self.pruning.method
        star = self.star_pruner if method == "lightvla_star" else None
        if token_filter is not None:
            self._check_filter(token_filter, star)

        bos, task, task_mask = self._embed_text(text_ids, text_lengths, proprio)

        with stage("vision"):
            visual = self._encode_images(pixel_values.to(self.dtype), num_images, star, task, task_mask, straight_through, noise_scale, generator)
        with stage("projector"):
            visual = VisualTokens(self.projector(visual.features), visual.patch_index, visual.valid)

        selection: Selection | None = None
        with stage("pruner"):
            if method == "lightvla":
                selection = self._select(self.pruner, visual, task, task_mask, straight_through, noise_scale, generator)
                visual = selection.apply(visual)
            elif star is not None and self.pruning.star_position == "llm" and self.pruning.star_llm_layer == 0:
                selection = self._select(star, visual, task, task_mask, straight_through, noise_scale, generator)
                visual = selection.apply(visual)
            if selection is not None and selection.straight_through is None and self.kept_token_buckets:
                width = visual.features.shape[1]
                visual = visual.padded(next((b for b in self.kept_token_buckets if b >= width), width))
        if star is not None and self.pruning.star_position == "vision":
            selection = self._vision_selection

        seq = self._compose(bos, visual, task, task_mask)
        with stage("llm"):
            hidden, seq, star_selection = self._run_llm(seq, star, straight_through, noise_scale, generator, token_filter)
        selection = star_selection or selection
        with stage("head"):
            states = self.llm.norm(self._read_slots(hidden, seq))
            actions = self.action_head(states)

        kept = self._kept_indices(selection, seq.visual, num_images)
        return VLAOutput(
            normalized_actions=actions,
            kept_patch_indices=kept,
            per_query_argmax=selection.picks if selection is not None else None,
            scores=selection.scores if selection is not None else None,
            sequence_lengths=[int(n) for n in seq.valid.sum(-1)],
            num_patches=num_images * self.vision_backbone.patches_per_image,
            timings_ms=dict(timer.ms) if timer is not None else {},
        )

    # ------------------------------------------------------------------------------------------- pieces
    def _embed_text(self, text_ids: torch.Tensor, text_lengths: torch.Tensor, proprio: torch.Tensor | None):
        """BOS embedding (B,1,D), task tokens (B, L_t, D) = [proprio | prompt | slots | </s>] and their mask."""
        batch, width = text_ids.shape
        emb = self.llm.embed_tokens(text_ids)
        cols = torch.arange(width, device=text_ids.device)[None, :]
        lengths = text_lengths.to(text_ids.device)[:, None]
        slots = self.config.num_action_slots
        is_slot = (cols >= lengths - 1 - slots) & (cols < lengths - 1)
        emb = emb * (~is_slot)[..., None].to(emb.dtype)
        bos, task, task_mask = emb[:, :1], emb[:, 1:], (cols < lengths)[:, 1:]
        if self.proprio_projector is not None:
            if proprio is None:
                raise InputError("this checkpoint needs the robot state (proprio) as input")
            token = self.proprio_projector(proprio.to(self.proprio_projector.fc1.weight.dtype)).to(emb.dtype)
            task = torch.cat([token[:, None], task], dim=1)
            task_mask = torch.cat([torch.ones_like(task_mask[:, :1]), task_mask], dim=1)
        return bos, task, task_mask

    def _select(self, pruner: nn.Module, visual: VisualTokens, task, task_mask, straight_through, noise_scale, generator) -> Selection:
        scores = pruner.scores(visual.features, task, task_mask)
        return select(
            scores,
            straight_through=straight_through,
            noise_scale=noise_scale if straight_through else 0.0,
            noise=self.pruning.noise,
            max_kept=None if straight_through else self.pruning.max_kept_tokens,
            generator=generator,
        )

    def _encode_images(self, pixels, num_images, star, task, task_mask, straight_through, noise_scale, generator) -> VisualTokens:
        self._vision_selection = None
        if star is None or self.pruning.star_position != "vision":
            return self.vision_backbone(pixels, num_images)
        block = self.pruning.star_vision_block
        selections: list[Selection] = []

        def selector_for(sample: slice):
            def selector(patches: torch.Tensor, offset: int) -> Selection:
                dense = VisualTokens.dense(patches, offset)
                sel = self._select(star, dense, task[sample], task_mask[sample], straight_through, noise_scale, generator)
                selections.append(sel)
                return sel
            return selector

        if straight_through or pixels.shape[0] == 1:
            visual = self.vision_backbone(pixels, num_images, selector_for(slice(None)), block)
            self._vision_selection = _concat_selections(selections, self.vision_backbone.patches_per_image)
            return visual
        samples = []
        for b in range(pixels.shape[0]):
            selections.clear()
            samples.append(self.vision_backbone(pixels[b : b + 1], num_images, selector_for(slice(b, b + 1)), block))
        self._vision_selection = None
        return _pad_visual(samples)

    def _compose(self, bos: torch.Tensor, visual: VisualTokens, task: torch.Tensor, task_mask: torch.Tensor) -> _Sequence:
        batch, num_task = task_mask.shape
        first_task_position = 1 + self.config.num_images * self.vision_backbone.patches_per_image
        positions = torch.cat(
            [
                torch.zeros(batch, 1, dtype=torch.long, device=task.device),
                visual.patch_index + 1,
                torch.arange(first_task_position, first_task_position + num_task, device=task.device).expand(batch, -1),
            ],
            dim=1,
        )
        valid = torch.cat([torch.ones_like(task_mask[:, :1]), visual.valid, task_mask], dim=1)
        hidden = torch.cat([bos, visual.features.to(bos.dtype), task], dim=1)
        return _Sequence(hidden, positions, valid, visual, task_mask)

    def _attention_mask(self, valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        """Key-padding mask only (B, 1, 1, L): 0 on real keys, the dtype's minimum on padding. None without padding."""
        if bool(valid.all()):
            return None
        mask = torch.zeros(valid.shape, dtype=dtype, device=valid.device)
        mask.masked_fill_(~valid, torch.finfo(dtype).min)
        return mask[:, None, None, :]

    def _check_filter(self, token_filter: TokenFilter, star: LearnableQueryPruner | None) -> None:
        if self.training:
            raise InputError("a token filter prunes at inference only: call eval() first")
        if not 0 <= token_filter.layer < len(self.llm.layers):
            raise InputError(f"token filter at layer {token_filter.layer}, but the LLM has {len(self.llm.layers)} layers")
        if star is not None and self.pruning.star_position == "llm" and self.pruning.star_llm_layer > 0:
            raise InputError("a token filter cannot be combined with LightVLA* pruning inside the LLM")

    def _run_llm(self, seq: _Sequence, star, straight_through, noise_scale, generator, token_filter: TokenFilter | None = None):
        prune_at = self.pruning.star_llm_layer if star is not None and self.pruning.star_position == "llm" else 0
        filter_at = token_filter.layer if token_filter is not None else None
        selection = None
        hidden = seq.hidden
        mask = self._attention_mask(seq.valid, hidden.dtype)
        rope = self.llm.rotary_emb(hidden, seq.positions)
        previous: LayerInput | None = None
        for index, layer in enumerate(self.llm.layers):
            if (prune_at and index == prune_at) or index == filter_at:
                n = seq.num_visual
                current = VisualTokens(hidden[:, 1 : 1 + n], seq.visual.patch_index, seq.visual.valid)
                task = hidden[:, 1 + n :]
                if index == filter_at:
                    inputs = LayerInput(index, hidden, mask, rope, n, seq.visual.valid, self._slot_positions(seq), previous)
                    kept = current.kept(token_filter(inputs) & seq.visual.valid)
                else:
                    selection = self._select(star, current, task, seq.task_mask, straight_through, noise_scale, generator)
                    kept = selection.apply(current)
                seq = self._compose(hidden[:, :1], kept, task, seq.task_mask)
                hidden = seq.hidden
                mask = self._attention_mask(seq.valid, hidden.dtype)
                rope = self.llm.rotary_emb(hidden, seq.positions)
            if token_filter is not None:
                previous = LayerInput(index, hidden, mask, rope, seq.num_visual, seq.visual.valid, self._slot_positions(seq), None)
            hidden = layer(hidden, attention_mask=mask, position_ids=seq.positions, position_embeddings=rope, is_causal=False)
        return hidden, seq, selection

    def _slot_positions(self, seq: _Sequence) -> torch.Tensor:
        """(B, slots): the positions whose hidden states the head reads.

        ``last`` (released LightVLA inference): the final chunk_len*action_dim positions, i.e. a2..a56 and </s>.
        ``aligned`` (what training and OFT inference use): the states one position before each slot, 29871..a55.
        """
        slots = self.config.num_action_slots
        end = 1 + seq.num_visual + seq.task_mask.sum(-1)  # one past each sample's stop token
        start = end - slots - (2 if self.readout == "aligned" else 0)
        return start[:, None] + torch.arange(slots, device=seq.task_mask.device)[None, :]

    def _read_slots(self, hidden: torch.Tensor, seq: _Sequence) -> torch.Tensor:
        """Per sample, the hidden states the head reads (:meth:`_slot_positions`)."""
        index = self._slot_positions(seq)
        return hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))

    def _kept_indices(self, selection: Selection | None, visual: VisualTokens, num_images: int) -> list[torch.Tensor]:
        if selection is None:
            return [visual.patch_index[b][visual.valid[b]] for b in range(visual.valid.shape[0])]
        if selection.straight_through is not None:  # training: the distinct picks
            return [torch.unique(visual.patch_index[b]) for b in range(visual.valid.shape[0])]
        return [visual.patch_index[b][visual.valid[b]] for b in range(visual.valid.shape[0])]


def _concat_selections(selections: list[Selection], patches_per_image: int) -> Selection | None:
    """Per-image selections (vision-encoder pruning) as one selection over all patches, for statistics."""
    if not selections:
        return None
    picks = torch.cat([s.picks + i * patches_per_image for i, s in enumerate(selections)], dim=1)
    keep = torch.cat([s.keep for s in selections], dim=1)
    return Selection(None, picks, keep, None)


def _pad_visual(samples: list[VisualTokens]) -> VisualTokens:
    """Samples pruned one by one, as one padded batch."""
    width = max(s.features.shape[1] for s in samples)
    padded = [s.padded(width) for s in samples]
    return VisualTokens(
        torch.cat([p.features for p in padded]),
        torch.cat([p.patch_index for p in padded]),
        torch.cat([p.valid for p in padded]),
    )

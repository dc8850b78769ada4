"""The fused DINOv2 + SigLIP vision backbone, built with timm from the checkpoint's config (docs/model-notes.md §1).

Features come from the second-to-last transformer block, without the final norm and without prefix tokens
(CLS, registers). Each camera image is encoded on its own; per patch the features are [DINOv2 | SigLIP].
"""

from __future__ import annotations

from typing import Callable

import timm
import torch
from torch import nn

from lightvla_ros.model.configuration import VisionConfig
from lightvla_ros.model.pruning import Selection, VisualTokens

# (patch tokens of the first featurizer (B, P, D), patch offset of this image) -> selection over those patches
VisionSelector = Callable[[torch.Tensor, int], Selection]


def create_featurizer(model_id: str, image_size: int, act_layer: str | None, overrides: dict) -> nn.Module:
    """A randomly initialised timm ViT of the checkpoint's architecture (weights come from the checkpoint)."""
    kwargs = dict(overrides)
    if act_layer is not None:
        kwargs["act_layer"] = act_layer
    return timm.create_model(model_id, pretrained=False, num_classes=0, img_size=image_size, **kwargs)


class FusedVisionBackbone(nn.Module):
    """One or two timm ViTs whose second-to-last-block patch features are concatenated channel-wise."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        featurizers = [
            create_featurizer(mid, size, act, kw)
            for mid, size, act, kw in zip(config.timm_model_ids, config.image_sizes, config.override_act_layers, config.model_kwargs)
        ]
        self.featurizer = featurizers[0]
        self.fused_featurizer = featurizers[1] if len(featurizers) > 1 else None
        self.image_size = config.image_size

    @property
    def featurizers(self) -> list[nn.Module]:
        return [f for f in (self.featurizer, self.fused_featurizer) if f is not None]

    @property
    def embed_dim(self) -> int:
        return sum(f.embed_dim for f in self.featurizers)

    @property
    def channels_per_image(self) -> int:
        return 3 * len(self.featurizers)

    @property
    def patches_per_image(self) -> int:
        return self.featurizer.patch_embed.num_patches

    @staticmethod
    def _embed(vit: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        return vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(pixels))))

    def forward(
        self,
        pixel_values: torch.Tensor,
        num_images: int,
        selector: VisionSelector | None = None,
        select_after_block: int = 0,
    ) -> VisualTokens:
        """Encode ``num_images`` images stacked on the channel axis into visual tokens (B, num_images * P, D).

        With a ``selector`` (LightVLA* inside the vision encoder), each image's patches are pruned after block
        ``select_after_block``; the remaining blocks run on the kept patches only. Inference then needs B == 1
        (the policy runs samples one by one), because kept counts differ between samples.
        """
        per_image = []
        c = self.channels_per_image
        for i in range(num_images):
            chunk = pixel_values[:, i * c : (i + 1) * c]
            tokens = [self._embed(vit, chunk[:, 3 * k : 3 * k + 3]) for k, vit in enumerate(self.featurizers)]
            stops = [len(vit.blocks) - 1 for vit in self.featurizers]  # stop after the second-to-last block
            offset = i * self.patches_per_image
            if selector is None:
                tokens = [vit.blocks[:stop](t) for vit, t, stop in zip(self.featurizers, tokens, stops)]
                per_image.append(VisualTokens.dense(self._patches(tokens), offset))
                continue
            split = select_after_block + 1
            tokens = [vit.blocks[:split](t) for vit, t in zip(self.featurizers, tokens)]
            prefix = [vit.num_prefix_tokens for vit in self.featurizers]
            selection = selector(tokens[0][:, prefix[0] :], offset)
            kept = [selection.apply(VisualTokens.dense(t[:, p:], offset)) for t, p in zip(tokens, prefix)]
            if not bool(kept[0].valid.all()):
                raise ValueError("vision-encoder pruning with a batch of differently pruned samples: run samples one by one")
            tokens = [torch.cat([t[:, :p], kt.features], dim=1) for t, p, kt in zip(tokens, prefix, kept)]
            tokens = [vit.blocks[split:stop](t) for vit, t, stop in zip(self.featurizers, tokens, stops)]
            per_image.append(VisualTokens(self._patches(tokens), kept[0].patch_index, kept[0].valid))
        return VisualTokens(
            torch.cat([v.features for v in per_image], dim=1),
            torch.cat([v.patch_index for v in per_image], dim=1),
            torch.cat([v.valid for v in per_image], dim=1),
        )

    def _patches(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t[:, vit.num_prefix_tokens :] for vit, t in zip(self.featurizers, tokens)], dim=-1)

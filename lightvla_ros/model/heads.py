"""The small networks around the LLM: vision projector, proprio projector and the L1 regression action head.

Module and parameter names match the released files (``projector.fc1``, ``module.fc1``,
``module.model.mlp_resnet_blocks.0.ffn.1`` ...) so their state dicts load without renaming.
"""

from __future__ import annotations

import torch
from torch import nn


class FusedGeluProjector(nn.Module):
    """``no-align+fused-gelu-mlp``: vision width -> 4x -> LLM width -> LLM width, exact (erf) GELUs."""

    def __init__(self, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
        self.fc3 = nn.Linear(llm_dim, llm_dim)
        self.act_fn1 = nn.GELU()
        self.act_fn2 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act_fn2(self.fc2(self.act_fn1(self.fc1(x)))))


class ProprioProjector(nn.Module):
    """Normalised robot state -> one LLM token (runs in float32: the state is small and precision-sensitive)."""

    def __init__(self, proprio_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_fn1(self.fc1(proprio)))


class MLPResNetBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    def __init__(self, num_blocks: int, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList(MLPResNetBlock(hidden_dim) for _ in range(num_blocks))
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class L1RegressionActionHead(nn.Module):
    """Reads chunk_len x action_dim final hidden states; each timestep sees its action_dim slot states concatenated."""

    def __init__(self, llm_dim: int, hidden_dim: int, action_dim: int, chunk_len: int, num_blocks: int = 2) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.chunk_len = chunk_len
        self.model = MLPResNet(num_blocks, llm_dim * action_dim, hidden_dim, action_dim)

    def forward(self, slot_states: torch.Tensor) -> torch.Tensor:
        """(B, chunk_len * action_dim, D) -> normalised actions (B, chunk_len, action_dim)."""
        batch = slot_states.shape[0]
        return self.model(slot_states.reshape(batch, self.chunk_len, -1))

"""Network building blocks shared by the world model and the actor-critic."""

from __future__ import annotations

import math

import torch
from torch import nn


def init_linear_(layer: nn.Linear, scale: float = 1.0) -> nn.Linear:
    """Truncated-normal, fan-average variance-scaling init (DreamerV3's default); zero bias.

    ``scale=0`` gives the zero-initialised output layers of the reward and critic heads.
    """
    fan_in, fan_out = layer.in_features, layer.out_features
    std = math.sqrt(scale / ((fan_in + fan_out) / 2.0)) / 0.87962566103423978
    if scale == 0.0:
        nn.init.zeros_(layer.weight)
    else:
        nn.init.trunc_normal_(layer.weight, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class NormLinear(nn.Module):
    """``Linear (no bias) -> LayerNorm -> SiLU``, DreamerV3's hidden layer."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = init_linear_(nn.Linear(in_features, out_features, bias=False))
        self.norm = nn.LayerNorm(out_features, eps=1e-3)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.linear(x)))


class MLP(nn.Module):
    """``layers`` hidden :class:`NormLinear` layers of ``units``, then an optional output layer.

    :param in_features: input width
    :param units: hidden width
    :param layers: number of hidden layers (0 means the output layer reads the input directly)
    :param out_features: width of the linear output layer, or ``None`` for no output layer
    :param out_scale: init scale of the output layer (``0.0`` zero-initialises it)
    """

    def __init__(
        self,
        in_features: int,
        units: int,
        layers: int,
        out_features: int | None = None,
        out_scale: float = 1.0,
    ) -> None:
        super().__init__()
        hidden: list[nn.Module] = []
        width = in_features
        for _ in range(layers):
            hidden.append(NormLinear(width, units))
            width = units
        self.hidden = nn.Sequential(*hidden)
        self.out_features = width if out_features is None else out_features
        self.out = None if out_features is None else init_linear_(nn.Linear(width, out_features), out_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hidden(x)
        return x if self.out is None else self.out(x)


class LayerNormGRUCell(nn.Module):
    """GRU cell with one fused linear map and LayerNorm over the gates (DreamerV3).

    ``reset, cand, update = LN(W [x, h])``; ``cand = tanh(sigmoid(reset) * cand)``;
    ``update = sigmoid(update - 1)``; ``h' = update * cand + (1 - update) * h``.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.linear = init_linear_(nn.Linear(input_size + hidden_size, 3 * hidden_size, bias=False))
        self.norm = nn.LayerNorm(3 * hidden_size, eps=1e-3)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        # x: (N, input_size), h: (N, hidden_size) -> (N, hidden_size)
        gates = self.norm(self.linear(torch.cat([x, h], dim=-1)))
        reset, cand, update = gates.chunk(3, dim=-1)
        cand = torch.tanh(torch.sigmoid(reset) * cand)
        update = torch.sigmoid(update - 1.0)
        return update * cand + (1.0 - update) * h

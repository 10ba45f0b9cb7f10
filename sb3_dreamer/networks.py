"""Network building blocks shared by the world model and the actor-critic."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from sb3_dreamer.distributions import symlog, symlog_bins, two_hot_symlog_loss, two_hot_symlog_mean

if TYPE_CHECKING:
    from sb3_dreamer.presets import DreamerConfig


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


class LayerStyle(NamedTuple):
    """How hidden layers are built: with LayerNorm or not, and which activation.

    DreamerV3: ``LayerStyle(True, "silu")``; DreamerV1/V2: ``LayerStyle(False, "elu")``.
    """

    norm: bool = True
    activation: str = "silu"

    @classmethod
    def of(cls, config: DreamerConfig) -> LayerStyle:
        """The style a :class:`~sb3_dreamer.presets.DreamerConfig` asks for."""
        return cls(config.layer_norm, config.activation)

    def make_activation(self) -> nn.Module:
        from sb3_dreamer.presets import ACTIVATIONS

        return ACTIVATIONS[self.activation]()


#: DreamerV3's hidden layers: LayerNorm and SiLU.
V3_STYLE = LayerStyle()


class HiddenLayer(nn.Module):
    """``Linear -> LayerNorm -> activation``; without LayerNorm the linear map has a bias instead."""

    def __init__(self, in_features: int, out_features: int, style: LayerStyle = V3_STYLE) -> None:
        super().__init__()
        self.linear = init_linear_(nn.Linear(in_features, out_features, bias=not style.norm))
        self.norm = nn.LayerNorm(out_features, eps=1e-3) if style.norm else nn.Identity()
        self.act = style.make_activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.linear(x)))


class MLP(nn.Module):
    """``layers`` :class:`HiddenLayer` of ``units``, then an optional output layer.

    :param in_features: input width
    :param units: hidden width
    :param layers: number of hidden layers (0 means the output layer reads the input directly)
    :param out_features: width of the linear output layer, or ``None`` for no output layer
    :param out_scale: init scale of the output layer (``0.0`` zero-initialises it)
    :param style: LayerNorm and activation of the hidden layers
    """

    def __init__(
        self,
        in_features: int,
        units: int,
        layers: int,
        out_features: int | None = None,
        out_scale: float = 1.0,
        style: LayerStyle = V3_STYLE,
    ) -> None:
        super().__init__()
        hidden: list[nn.Module] = []
        width = in_features
        for _ in range(layers):
            hidden.append(HiddenLayer(width, units, style))
            width = units
        self.hidden = nn.Sequential(*hidden)
        self.out_features = width if out_features is None else out_features
        self.out = None if out_features is None else init_linear_(nn.Linear(width, out_features), out_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hidden(x)
        return x if self.out is None else self.out(x)


class ScalarHead(MLP):
    """An :class:`MLP` predicting one real number per input (reward, value) as a distribution.

    ``"two_hot"`` (DreamerV3): logits over ``bins`` symlog-spaced bins, zero-initialised output,
    trained with two-hot cross-entropy and read out as the symexp of the expected bin.
    ``"gaussian"`` (DreamerV1/V2): a unit-variance Gaussian whose negative log-likelihood is half
    the squared error (up to a constant).
    """

    def __init__(
        self, in_features: int, units: int, layers: int, kind: str, bins: int, style: LayerStyle = V3_STYLE
    ) -> None:
        if kind not in ("two_hot", "gaussian"):
            raise ValueError(f"kind must be 'two_hot' or 'gaussian', got {kind!r}")
        two_hot = kind == "two_hot"
        super().__init__(in_features, units, layers, bins if two_hot else 1, 0.0 if two_hot else 1.0, style)
        self.two_hot = two_hot
        self.register_buffer("bins", symlog_bins(bins), persistent=False)

    def mean(self, raw: torch.Tensor) -> torch.Tensor:
        """Predicted value from the head's output: ``(..., P) -> (...)``."""
        return two_hot_symlog_mean(raw, self.bins) if self.two_hot else raw.squeeze(-1).float()

    def loss(self, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of ``target (...)`` under the head's output ``(..., P)``: ``(...)``."""
        if self.two_hot:
            return two_hot_symlog_loss(raw, target, self.bins)
        return 0.5 * (raw.squeeze(-1).float() - target) ** 2


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
        # the gates in float32: CPU autocast leaves LayerNorm's output in bfloat16, where 1 - update
        # moves in steps of 2^-8 (an update of 0.0009 would keep the state exactly)
        gates = self.norm(self.linear(torch.cat([x, h], dim=-1))).float()
        reset, cand, update = gates.chunk(3, dim=-1)
        cand = torch.tanh(torch.sigmoid(reset) * cand)
        update = torch.sigmoid(update - 1.0)
        return update * cand + (1.0 - update) * h


class StandardGRUCell(nn.GRUCell):
    """``torch.nn.GRUCell`` (DreamerV1's GRU, no LayerNorm) with its gates in float32.

    Same parameters and equations as the parent (``r, z = sigmoid(W_i x + W_h h)``,
    ``n = tanh(W_in x + r * W_hn h)``, ``h' = (1 - z) * n + z * h``); the two matrix products run
    in the autocast precision, the gates after them in float32. Under CPU bfloat16 autocast
    ``torch.nn.GRUCell`` computes its gates in bfloat16, where ``z`` moves in steps of 2^-8 near 1:
    a state that should move by 0.1% either stays put or moves by 0.4%.
    """

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        # x: (N, input_size), h: (N, hidden_size) -> (N, hidden_size)
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden_size, dtype=torch.float32)
        from_input = nn.functional.linear(x, self.weight_ih, self.bias_ih).float()  # (N, 3 H)
        from_state = nn.functional.linear(h, self.weight_hh, self.bias_hh).float()  # (N, 3 H)
        reset_x, update_x, cand_x = from_input.chunk(3, dim=-1)
        reset_h, update_h, cand_h = from_state.chunk(3, dim=-1)
        reset = torch.sigmoid(reset_x + reset_h)
        update = torch.sigmoid(update_x + update_h)
        cand = torch.tanh(cand_x + reset * cand_h)
        return (1.0 - update) * cand + update * h.float()


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of ``(N, C, H, W)`` feature maps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def conv_stage_sizes(height: int, width: int, min_resolution: int = 6) -> list[tuple[int, int]]:
    """Spatial sizes through stride-2 (kernel 4, padding 1) convolutions until both sides are at most
    ``min_resolution``: 64x64 -> 32, 16, 8, 4; 84x84 -> 42, 21, 10, 5; 40x40 -> 20, 10, 5."""
    sizes = [(height, width)]
    while min(sizes[-1]) > min_resolution:
        h, w = sizes[-1]
        sizes.append((h // 2, w // 2))
    if len(sizes) == 1:
        raise ValueError(f"images must be larger than {min_resolution}x{min_resolution}, got {height}x{width}")
    return sizes


class ConvEncoder(nn.Module):
    """Stride-2 convolutions (kernel 4) with channel LayerNorm (or a bias) and an activation,
    channels doubling per stage.

    Accepts any image size above 6x6: ``(..., C, H, W) -> (..., embed_size)``. ``uint8`` pixels are
    scaled to ``[-0.5, 0.5]``. The convolutions (here and in :class:`ConvDecoder`) keep PyTorch's
    default init, unlike the linear layers (:func:`init_linear_`); the DreamerV3 authors' convs
    use the same truncated-normal fan-average init with zero biases. All pixel results so far
    were measured with PyTorch's init.
    """

    def __init__(self, shape: tuple[int, int, int], depth: int, style: LayerStyle = V3_STYLE) -> None:
        super().__init__()
        channels, height, width = shape
        self.sizes = conv_stage_sizes(height, width)
        layers: list[nn.Module] = []
        width_in, width_out = channels, depth
        for _ in self.sizes[1:]:
            layers += [
                nn.Conv2d(width_in, width_out, 4, stride=2, padding=1, bias=not style.norm),
                ChannelLayerNorm(width_out, eps=1e-3) if style.norm else nn.Identity(),
                style.make_activation(),
            ]
            width_in, width_out = width_out, 2 * width_out
        self.net = nn.Sequential(*layers)
        self.out_channels = width_in
        self.embed_size = width_in * self.sizes[-1][0] * self.sizes[-1][1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch_shape = images.shape[:-3]
        # channels-last (NHWC) memory: oneDNN's fast convolution layout, and the layout in which
        # ChannelLayerNorm normalises contiguous rows
        x = images.reshape(-1, *images.shape[-3:]).contiguous(memory_format=torch.channels_last).float()
        if images.dtype == torch.uint8:
            x = x.mul_(1.0 / 255.0).sub_(0.5)
        return self.net(x).reshape(*batch_shape, -1)


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder` with transposed convolutions; predicts pixels in ``[0, 1]``
    (``uint8`` targets are divided by 255) and returns the squared error summed over pixels."""

    def __init__(
        self, feature_size: int, shape: tuple[int, int, int], depth: int, style: LayerStyle = V3_STYLE
    ) -> None:
        super().__init__()
        channels, height, width = shape
        self.shape = shape
        self.sizes = conv_stage_sizes(height, width)
        stages = len(self.sizes) - 1
        top_channels = depth * 2 ** (stages - 1)
        self.top = (top_channels, *self.sizes[-1])
        self.linear = init_linear_(nn.Linear(feature_size, top_channels * self.sizes[-1][0] * self.sizes[-1][1]))
        self.deconvs = nn.ModuleList()
        self.norms = nn.ModuleList()
        width_in = top_channels
        for stage in range(stages):
            last = stage == stages - 1
            width_out = channels if last else width_in // 2
            bias = last or not style.norm
            self.deconvs.append(nn.ConvTranspose2d(width_in, width_out, 4, stride=2, padding=1, bias=bias))
            self.norms.append(nn.Identity() if bias else ChannelLayerNorm(width_out, eps=1e-3))
            width_in = width_out
        self.act = style.make_activation()

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Reconstructed images in ``[0, 1]`` (unclipped): ``(..., F) -> (..., C, H, W)``."""
        batch_shape = features.shape[:-1]
        return (self.raw_images(features).float() + 0.5).reshape(*batch_shape, *self.shape)

    def raw_images(self, features: torch.Tensor) -> torch.Tensor:
        """The last transposed convolution's output, channels-last, in the compute dtype and shifted
        by ``-0.5``: ``(N, F) -> (N, C, H, W)``."""
        x = self.linear(features.reshape(-1, features.shape[-1])).reshape(-1, *self.top)
        x = x.contiguous(memory_format=torch.channels_last)
        targets = list(reversed(self.sizes[:-1]))
        for index, (deconv, norm) in enumerate(zip(self.deconvs, self.norms)):
            x = deconv(x, output_size=targets[index])
            if index < len(self.deconvs) - 1:
                x = self.act(norm(x))
        return x

    def forward(self, features: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        # features (T, B, F), images (T, B, C, H, W) -> loss (T, B)
        # both as contiguous (N, H * W * C) rows: elementwise kernels and the sum's broadcast gradient
        # stay on their vectorised paths (channels-last 4-d strides are several times slower here)
        prediction = self.raw_images(features).permute(0, 2, 3, 1).reshape(-1, images.shape[-3:].numel())
        target = images.reshape(-1, *images.shape[-3:]).permute(0, 2, 3, 1).reshape(prediction.shape)
        if target.is_floating_point():
            target = target.float()  # a float64 image gives a float32 loss, as uint8 pixels do
        scale = 1.0 / 255.0 if images.dtype == torch.uint8 else 1.0
        # prediction - target in one pass over the pixels, then the +0.5 shift in place
        error = torch.sub(prediction.float(), target, alpha=scale).add_(0.5)
        return error.square().sum(-1).reshape(images.shape[:-3])


#: Key under which a non-Dict observation is handled by :class:`MultiEncoder` / :class:`MultiDecoder`.
SINGLE_KEY = "observation"

Observations = torch.Tensor | dict[str, torch.Tensor]


def as_dict(observations: Observations) -> dict[str, torch.Tensor]:
    """Dict view of an observation batch (a plain tensor becomes ``{SINGLE_KEY: tensor}``)."""
    return observations if isinstance(observations, dict) else {SINGLE_KEY: observations}


class MultiEncoder(nn.Module):
    """Encoder for any mix of image and vector inputs, concatenating their embeddings.

    Image keys go through a :class:`ConvEncoder` each; all vector keys are flattened, concatenated,
    symlog-squashed (DreamerV3; unless ``symlog_inputs=False``) and fed to one MLP.

    :param image_shapes: ``{key: (C, H, W)}``
    :param vector_sizes: ``{key: flattened size}``
    """

    def __init__(
        self,
        image_shapes: dict[str, tuple[int, int, int]],
        vector_sizes: dict[str, int],
        units: int,
        layers: int,
        cnn_depth: int,
        symlog_inputs: bool = True,
        style: LayerStyle = V3_STYLE,
    ) -> None:
        super().__init__()
        if not image_shapes and not vector_sizes:
            raise ValueError("the encoder needs at least one image or vector input")
        self.image_keys = sorted(image_shapes)
        self.vector_keys = sorted(vector_sizes)
        self.symlog_inputs = symlog_inputs
        self.cnns = nn.ModuleDict({key: ConvEncoder(image_shapes[key], cnn_depth, style) for key in self.image_keys})
        vector_size = sum(vector_sizes.values())
        self.mlp = MLP(vector_size, units, max(layers, 1), style=style) if self.vector_keys else None
        self.embed_size = sum(cnn.embed_size for cnn in self.cnns.values()) + (
            self.mlp.out_features if self.mlp is not None else 0
        )

    def forward(self, observations: Observations) -> torch.Tensor:
        # observations: (T, B, ...) per key -> (T, B, E)
        obs = as_dict(observations)
        parts = [self.cnns[key](obs[key]) for key in self.image_keys]
        if self.mlp is not None:
            vectors = torch.cat([flatten_steps(obs[key]).float() for key in self.vector_keys], dim=-1)
            parts.append(self.mlp(symlog(vectors) if self.symlog_inputs else vectors))
        return torch.cat(parts, dim=-1)


def flatten_steps(x: torch.Tensor) -> torch.Tensor:
    """``(T, B, *shape) -> (T, B, prod(shape))``."""
    return x.reshape(*x.shape[:2], -1)


class MultiDecoder(nn.Module):
    """Decoder heads matching :class:`MultiEncoder`: a :class:`ConvDecoder` per image key and one
    MLP for all vector keys (predicting symlog values if ``symlog_inputs``). The loss is the
    squared error summed over all pixels and values per step, times ``loss_scale`` (``0.5`` makes
    it the negative log-likelihood of a unit-variance Gaussian, up to a constant: V1/V2)."""

    def __init__(
        self,
        feature_size: int,
        image_shapes: dict[str, tuple[int, int, int]],
        vector_sizes: dict[str, int],
        units: int,
        layers: int,
        cnn_depth: int,
        symlog_inputs: bool = True,
        loss_scale: float = 1.0,
        style: LayerStyle = V3_STYLE,
    ) -> None:
        super().__init__()
        self.symlog_inputs, self.loss_scale = symlog_inputs, loss_scale
        self.image_keys = sorted(image_shapes)
        self.vector_keys = sorted(vector_sizes)
        self.vector_sizes = [vector_sizes[key] for key in self.vector_keys]
        self.cnns = nn.ModuleDict(
            {key: ConvDecoder(feature_size, image_shapes[key], cnn_depth, style) for key in self.image_keys}
        )
        self.mlp = (
            MLP(feature_size, units, max(layers, 1), out_features=sum(self.vector_sizes), style=style)
            if self.vector_keys
            else None
        )

    def forward(self, features: torch.Tensor, observations: Observations) -> torch.Tensor:
        # features (T, B, F) -> reconstruction loss (T, B)
        obs = as_dict(observations)
        losses = [self.cnns[key](features, obs[key]) for key in self.image_keys]
        if self.mlp is not None:
            target = torch.cat([flatten_steps(obs[key]).float() for key in self.vector_keys], dim=-1)
            target = symlog(target) if self.symlog_inputs else target
            losses.append(((self.mlp(features).float() - target) ** 2).sum(-1))
        return self.loss_scale * torch.stack(losses).sum(0)

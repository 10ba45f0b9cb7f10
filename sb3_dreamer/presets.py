"""Hyperparameter presets: the DreamerV3 algorithm defaults and the model-size table.

All algorithm hyperparameters live in one typed dataclass, :class:`DreamerConfig`. A config is
built from an algorithm version and a model size with :func:`make_config`; any field can then be
overridden by name. The :class:`~sb3_dreamer.Dreamer` constructor does exactly that, so every
hyperparameter is reachable from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

SUPPORTED_VERSIONS = ("v3",)


@dataclass(frozen=True)
class ModelSize:
    """Widths and depths of every network, one row of the DreamerV3 size table.

    :param deter_size: GRU (deterministic state) units
    :param hidden_size: width of the RSSM's input/output layers
    :param stoch_size: number of categorical latents
    :param classes: classes per categorical latent
    :param units: width of every MLP (encoder, decoder, heads, actor, critic)
    :param layers: hidden layers of every MLP
    :param cnn_depth: channels of the first convolution (doubled per stage) for image inputs
    """

    deter_size: int
    hidden_size: int
    stoch_size: int
    classes: int
    units: int
    layers: int
    cnn_depth: int


#: Size presets. ``XS``..``L`` follow the DreamerV3 paper; ``tiny`` is for tests and
#: ``T`` ("CPU tiny") is a small model that still learns classic-control tasks quickly on a CPU.
MODEL_SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize(deter_size=32, hidden_size=32, stoch_size=4, classes=4, units=32, layers=1, cnn_depth=4),
    "T": ModelSize(deter_size=128, hidden_size=128, stoch_size=16, classes=16, units=128, layers=1, cnn_depth=16),
    "XS": ModelSize(deter_size=256, hidden_size=256, stoch_size=32, classes=32, units=256, layers=1, cnn_depth=24),
    "S": ModelSize(deter_size=512, hidden_size=512, stoch_size=32, classes=32, units=512, layers=2, cnn_depth=32),
    "M": ModelSize(deter_size=1024, hidden_size=1024, stoch_size=32, classes=32, units=640, layers=3, cnn_depth=48),
    "L": ModelSize(deter_size=2048, hidden_size=2048, stoch_size=32, classes=32, units=768, layers=4, cnn_depth=64),
}


@dataclass(frozen=True)
class DreamerConfig:
    """Every algorithm hyperparameter of Dreamer (defaults: DreamerV3, size ``S``).

    Model sizes
        ``deter_size``, ``hidden_size``, ``stoch_size``, ``classes``, ``units``, ``layers``,
        ``cnn_depth``: see :class:`ModelSize`.

    World model
        ``unimix``: uniform mixture of the latent categoricals (1%).
        ``kl_dyn_scale`` / ``kl_rep_scale``: weights of the dynamics loss
        ``KL(sg(post) || prior)`` and representation loss ``KL(post || sg(prior))``.
        ``free_bits``: both KL terms are clipped below at this many nats, per time step.
        ``reward_bins``: bins of the two-hot symlog reward and critic heads.
        ``model_lr``, ``model_eps``, ``model_grad_clip``: Adam and global-norm clipping.

    Behaviour
        ``horizon``: imagination steps; ``gamma`` and ``return_lambda``: λ-return.
        ``continue_estimate``: imagined continue flags from the continue head's ``"mode"``
        (DreamerV3 2023) or its ``"probability"`` (the authors' 2024 code).
        ``ent_coef``: actor entropy bonus. ``actor_grad_discrete`` / ``actor_grad_continuous``:
        ``"reinforce"`` or ``"backprop"``. ``actor_min_std`` / ``actor_max_std``: bounds of the
        Gaussian actor's std. ``actor_unimix``: uniform mixture of the discrete actor.
        ``return_norm_decay``, ``return_norm_low``, ``return_norm_high``,
        ``return_norm_limit``: returns are divided by ``max(limit, P_high - P_low)``, with the
        percentiles tracked by an EMA. ``slow_critic_decay`` / ``slow_reg_scale``: EMA critic and
        the weight of the critic's regulariser toward it. ``actor_lr``, ``critic_lr``,
        ``actor_critic_eps``, ``actor_critic_grad_clip``: their optimisers.
    """

    version: str = "v3"
    deter_size: int = 512
    hidden_size: int = 512
    stoch_size: int = 32
    classes: int = 32
    units: int = 512
    layers: int = 2
    cnn_depth: int = 32
    unimix: float = 0.01
    kl_dyn_scale: float = 0.5
    kl_rep_scale: float = 0.1
    free_bits: float = 1.0
    reward_bins: int = 255
    model_lr: float = 1e-4
    model_eps: float = 1e-8
    model_grad_clip: float = 1000.0
    continue_estimate: str = "mode"
    horizon: int = 15
    gamma: float = 0.997
    return_lambda: float = 0.95
    ent_coef: float = 3e-4
    actor_grad_discrete: str = "reinforce"
    actor_grad_continuous: str = "backprop"
    actor_min_std: float = 0.1
    actor_max_std: float = 1.0
    actor_unimix: float = 0.01
    return_norm_decay: float = 0.99
    return_norm_low: float = 5.0
    return_norm_high: float = 95.0
    return_norm_limit: float = 1.0
    slow_critic_decay: float = 0.98
    slow_reg_scale: float = 1.0
    actor_lr: float = 3e-5
    critic_lr: float = 3e-5
    actor_critic_eps: float = 1e-5
    actor_critic_grad_clip: float = 100.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        if self.version not in SUPPORTED_VERSIONS:
            raise ValueError(f"version must be one of {SUPPORTED_VERSIONS}, got {self.version!r}")
        positive_ints = ("deter_size", "hidden_size", "stoch_size", "units", "cnn_depth", "horizon")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.layers, int) or self.layers < 0:
            raise ValueError(f"layers must be a non-negative integer, got {self.layers!r}")
        if not isinstance(self.classes, int) or self.classes < 2:
            raise ValueError(f"classes must be an integer >= 2, got {self.classes!r}")
        if not isinstance(self.reward_bins, int) or self.reward_bins < 2:
            raise ValueError(f"reward_bins must be an integer >= 2, got {self.reward_bins!r}")
        for name in ("gamma", "return_lambda", "return_norm_decay", "slow_critic_decay"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
        for name in ("unimix", "actor_unimix"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
        for name in ("model_lr", "actor_lr", "critic_lr", "model_eps", "actor_critic_eps"):
            if getattr(self, name) <= 0.0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("kl_dyn_scale", "kl_rep_scale", "free_bits", "ent_coef", "slow_reg_scale"):
            if getattr(self, name) < 0.0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)!r}")
        if self.continue_estimate not in ("mode", "probability"):
            raise ValueError(f"continue_estimate must be 'mode' or 'probability', got {self.continue_estimate!r}")
        for name in ("actor_grad_discrete", "actor_grad_continuous"):
            if getattr(self, name) not in ("reinforce", "backprop"):
                raise ValueError(f"{name} must be 'reinforce' or 'backprop', got {getattr(self, name)!r}")
        if not 0.0 < self.actor_min_std <= self.actor_max_std:
            raise ValueError(
                f"need 0 < actor_min_std <= actor_max_std, got {self.actor_min_std} and {self.actor_max_std}"
            )
        if not 0.0 <= self.return_norm_low < self.return_norm_high <= 100.0:
            raise ValueError("need 0 <= return_norm_low < return_norm_high <= 100")

    def replace(self, **overrides: Any) -> DreamerConfig:
        """A copy with some fields replaced; unknown names raise ``TypeError``."""
        known = {field.name for field in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown Dreamer hyperparameter(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **overrides)


def make_config(version: str = "v3", model_size: str = "S", **overrides: Any) -> DreamerConfig:
    """Build the preset for ``version`` at ``model_size`` and apply ``overrides`` by field name."""
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"version must be one of {SUPPORTED_VERSIONS}, got {version!r}")
    if model_size not in MODEL_SIZES:
        raise ValueError(f"model_size must be one of {list(MODEL_SIZES)}, got {model_size!r}")
    sizes = dataclasses.asdict(MODEL_SIZES[model_size])
    return DreamerConfig(version=version).replace(**sizes).replace(**overrides)

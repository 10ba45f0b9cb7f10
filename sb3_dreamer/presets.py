"""Hyperparameter presets: the DreamerV1, V2 and V3 algorithm sets and the model-size table.

All algorithm hyperparameters live in one typed dataclass, :class:`DreamerConfig`. A config is
built from an algorithm version and a model size with :func:`make_config`; any field can then be
overridden by name. The :class:`~sb3_dreamer.Dreamer` constructor does exactly that, so every
hyperparameter is reachable from it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

from torch import nn

SUPPORTED_VERSIONS = ("v1", "v2", "v3")

#: Activation functions by name (``DreamerConfig.activation``).
ACTIVATIONS: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "elu": nn.ELU}

#: Ways to train the actor (``actor_grad_discrete`` / ``actor_grad_continuous``).
ACTOR_GRADIENTS = ("reinforce", "backprop", "both")


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
    "M": ModelSize(deter_size=1024, hidden_size=640, stoch_size=32, classes=32, units=640, layers=3, cnn_depth=48),
    "L": ModelSize(deter_size=2048, hidden_size=768, stoch_size=32, classes=32, units=768, layers=4, cnn_depth=64),
}


@dataclass(frozen=True)
class DreamerConfig:
    """Every algorithm hyperparameter of Dreamer. The defaults are DreamerV3 at size ``S``;
    :data:`V1`, :data:`V2` and :data:`V3` are the three papers' sets.

    Model sizes
        ``deter_size``, ``hidden_size``, ``stoch_size``, ``classes``, ``units``, ``layers``,
        ``cnn_depth``: see :class:`ModelSize`. With Gaussian latents ``stoch_size`` is the number
        of latent dimensions and ``classes`` is unused.

    Architecture
        ``latent``: ``"categorical"`` (``stoch_size`` one-hots of ``classes``, straight-through
        gradients; V2/V3) or ``"gaussian"`` (diagonal Gaussian with std ``softplus + min``; V1).
        ``latent_min_std``: that minimum std. ``unimix``: uniform mixture of the latent
        categoricals (1% in V3). ``gru``: ``"layer_norm"`` (V2/V3's GRU with LayerNorm over the
        gates) or ``"standard"`` (``torch.nn.GRUCell``'s equations, gates in float32; V1).
        ``layer_norm``: LayerNorm in every hidden layer of the MLPs, the RSSM and the CNNs (V3).
        ``activation``: ``"silu"`` (V3) or ``"elu"`` (V1/V2). ``learned_initial_state``: the RSSM
        starts episodes from a learned state (V3) instead of zeros. ``symlog_inputs``: vector
        observations are symlog-squashed before the encoder and the decoder predicts them in
        symlog space (V3). ``heads``: the reward and critic heads, ``"two_hot"`` (symlog two-hot over
        ``reward_bins`` bins, zero-initialised output; V3) or ``"gaussian"`` (unit-variance
        Gaussian, whose negative log-likelihood is half the squared error; V1/V2). The
        reconstruction loss follows: squared error for ``"two_hot"``, half of it (unit-variance
        Gaussian) for ``"gaussian"``.

    World-model loss
        ``kl_dyn_scale`` / ``kl_rep_scale``: weights of the dynamics loss ``KL(sg(post) || prior)``
        and the representation loss ``KL(post || sg(prior))``. Both equal the KL; only their
        gradients differ, so V1's plain KL is ``1 / 1`` and V2's balancing ``α = 0.8`` at scale
        ``s`` is ``0.8 s / 0.2 s``. ``free_bits``: both terms are clipped below at this many nats,
        per time step (V3) or, with ``free_bits_on_mean``, on their batch mean (V1's free nats).
        ``decoder_scale``, ``reward_scale``, ``continue_scale``: weights of the reconstruction,
        reward and continue losses (1 in all three papers; the authors' code exposes them as
        loss scales).
        ``model_lr``, ``model_eps``, ``model_grad_clip``: Adam and global-norm clipping.
        ``weight_decay``: each update multiplies every parameter of the three networks by
        ``1 - weight_decay`` before Adam's step, whatever the learning rate, as the V2 authors'
        optimiser does (V2: 1e-6).

    Behaviour
        ``horizon``: imagination steps; ``gamma`` and ``return_lambda``: λ-return.
        ``continue_estimate``: imagined continue flags from the continue head's ``"mode"``
        (DreamerV3 2023) or its ``"probability"`` (the authors' V1, V2 and 2024 DreamerV3 code).
        ``ent_coef``: actor entropy bonus. ``actor_grad_discrete`` / ``actor_grad_continuous``:
        ``"reinforce"``, ``"backprop"`` (through the learned dynamics) or ``"both"``, which mixes
        them as ``actor_grad_mix * backprop + (1 - actor_grad_mix) * reinforce`` (V2).
        ``actor_dist``: ``"normal"`` (tanh mean, std bounded by ``actor_min_std`` /
        ``actor_max_std``; V3), ``"trunc_normal"`` (tanh mean, std ``2 sigmoid(s / 2) +
        actor_min_std``, truncated to ``[-1, 1]``; V2) or ``"tanh_normal"`` (``tanh`` of a
        Gaussian with mean ``5 tanh(μ / 5)`` and std ``softplus(s + softplus⁻¹(5)) +
        actor_min_std``; V1).
        ``actor_unimix``: uniform mixture of the discrete actor. ``explore_noise``: while
        collecting, Gaussian noise of this std added to continuous actions, or the probability of
        a uniformly random discrete action (V1's 0.3).
        ``backprop_baseline``: a backprop actor maximises the advantage (return minus the critic's
        value of the same state; V3) rather than the return itself (V1/V2).
        ``return_normalization``: divide advantages by ``max(limit, P_high - P_low)`` of the
        returns, with the percentiles tracked by an EMA (``return_norm_decay``,
        ``return_norm_low``, ``return_norm_high``, ``return_norm_limit``; V3).
        Slow critic: every ``slow_critic_interval`` updates it moves toward the critic by
        ``1 - slow_critic_decay`` (V3: EMA, ``1`` and ``0.98``; V2: hard copy, ``100`` and ``0``).
        ``slow_critic_returns``: the λ-returns and the Reinforce baseline use the slow critic
        (V2's target network). ``slow_reg_scale``: weight of the critic's regulariser toward the
        slow critic (V3). ``replay_critic_scale``: weight of a second critic loss on the real replayed
        sequences, whose λ-returns use the real rewards and terminals and bootstrap from each replayed
        state's imagined return (0 in the 2023 papers; 0.3 in the authors' 2024 DreamerV3 code).
        ``actor_lr``, ``critic_lr``, ``actor_critic_eps``,
        ``actor_critic_grad_clip``: their optimisers.
    """

    version: str = "v3"
    deter_size: int = 512
    hidden_size: int = 512
    stoch_size: int = 32
    classes: int = 32
    units: int = 512
    layers: int = 2
    cnn_depth: int = 32
    latent: str = "categorical"
    latent_min_std: float = 0.1
    unimix: float = 0.01
    gru: str = "layer_norm"
    layer_norm: bool = True
    activation: str = "silu"
    learned_initial_state: bool = True
    symlog_inputs: bool = True
    heads: str = "two_hot"
    kl_dyn_scale: float = 0.5
    kl_rep_scale: float = 0.1
    free_bits: float = 1.0
    free_bits_on_mean: bool = False
    decoder_scale: float = 1.0
    reward_scale: float = 1.0
    continue_scale: float = 1.0
    reward_bins: int = 255
    model_lr: float = 1e-4
    model_eps: float = 1e-8
    model_grad_clip: float = 1000.0
    weight_decay: float = 0.0
    continue_estimate: str = "mode"
    horizon: int = 15
    gamma: float = 0.997
    return_lambda: float = 0.95
    ent_coef: float = 3e-4
    actor_grad_discrete: str = "reinforce"
    actor_grad_continuous: str = "backprop"
    actor_grad_mix: float = 0.1
    actor_dist: str = "normal"
    actor_min_std: float = 0.1
    actor_max_std: float = 1.0
    actor_unimix: float = 0.01
    explore_noise: float = 0.0
    return_normalization: bool = True
    backprop_baseline: bool = True
    return_norm_decay: float = 0.99
    return_norm_low: float = 5.0
    return_norm_high: float = 95.0
    return_norm_limit: float = 1.0
    slow_critic_interval: int = 1
    slow_critic_decay: float = 0.98
    slow_critic_returns: bool = False
    slow_reg_scale: float = 1.0
    replay_critic_scale: float = 0.0
    actor_lr: float = 3e-5
    critic_lr: float = 3e-5
    actor_critic_eps: float = 1e-5
    actor_critic_grad_clip: float = 100.0

    def __post_init__(self) -> None:
        self.validate()

    @property
    def stoch_width(self) -> int:
        """Width of the flattened stochastic state: ``stoch_size * classes`` or ``stoch_size``."""
        return self.stoch_size * self.classes if self.latent == "categorical" else self.stoch_size

    @property
    def feature_size(self) -> int:
        """Width of the model state ``[deter, stoch]`` that every head reads."""
        return self.deter_size + self.stoch_width

    def validate(self) -> None:
        """Raise ``ValueError`` (or ``TypeError`` for a value of the wrong type) naming the first
        invalid field."""
        if self.version not in SUPPORTED_VERSIONS:
            raise ValueError(f"version must be one of {SUPPORTED_VERSIONS}, got {self.version!r}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type not in ("float", float):  # a string under ``from __future__ import annotations``
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                hint = " (a fixed entropy scale; SAC's 'auto' has no counterpart)" if field.name == "ent_coef" else ""
                raise TypeError(f"{field.name} must be a real number{hint}, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{field.name} must be finite, got {value!r}")
        positive_ints = ("deter_size", "hidden_size", "stoch_size", "units", "cnn_depth", "horizon")
        for name in positive_ints + ("slow_critic_interval",):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.layers, int) or self.layers < 0:
            raise ValueError(f"layers must be a non-negative integer, got {self.layers!r}")
        if not isinstance(self.classes, int) or self.classes < 2:
            raise ValueError(f"classes must be an integer >= 2, got {self.classes!r}")
        if not isinstance(self.reward_bins, int) or self.reward_bins < 2:
            raise ValueError(f"reward_bins must be an integer >= 2, got {self.reward_bins!r}")
        choices = {
            "latent": ("categorical", "gaussian"),
            "gru": ("layer_norm", "standard"),
            "activation": tuple(ACTIVATIONS),
            "heads": ("two_hot", "gaussian"),
            "continue_estimate": ("mode", "probability"),
            "actor_grad_discrete": ACTOR_GRADIENTS,
            "actor_grad_continuous": ACTOR_GRADIENTS,
            "actor_dist": ("normal", "tanh_normal", "trunc_normal"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.actor_dist == "tanh_normal" and self.actor_grad_continuous != "backprop":
            # a float32 tanh sample is exactly ±1 beyond |u| ~ 9 (often at V1's initial std of 5),
            # where its log-likelihood, which Reinforce needs, can no longer be recovered
            raise ValueError(
                f"actor_dist='tanh_normal' needs actor_grad_continuous='backprop', got {self.actor_grad_continuous!r}"
            )
        flags = ("layer_norm", "learned_initial_state", "symlog_inputs", "free_bits_on_mean", "return_normalization")
        for name in flags + ("slow_critic_returns", "backprop_baseline"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        for name in ("gamma", "return_lambda", "return_norm_decay", "slow_critic_decay", "actor_grad_mix"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
        for name in ("unimix", "actor_unimix"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
        # a clip norm of 0 zeroes every gradient and a negative one reverses it; a return_norm_limit
        # of 0 lets the return scale reach 0
        positive = ("model_lr", "actor_lr", "critic_lr", "model_eps", "actor_critic_eps", "latent_min_std")
        for name in positive + ("model_grad_clip", "actor_critic_grad_clip", "return_norm_limit"):
            if getattr(self, name) <= 0.0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        loss_scales = ("kl_dyn_scale", "kl_rep_scale", "decoder_scale", "reward_scale", "continue_scale")
        others = ("free_bits", "ent_coef", "slow_reg_scale", "replay_critic_scale", "weight_decay", "explore_noise")
        for name in loss_scales + others:
            if getattr(self, name) < 0.0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)!r}")
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


#: DreamerV3 ("Mastering Diverse Domains through World Models", 2023) at size ``S``: the defaults.
V3 = DreamerConfig()

#: DreamerV2 ("Mastering Atari with Discrete World Models", 2021), its DeepMind Control settings:
#: 32x32 categorical latents without unimix, LayerNorm GRU of 200 units, ELU MLPs of 4 x 400 without
#: LayerNorm, KL balancing 0.8 at scale 1 with 1 free nat on the batch mean (the authors' ``dmc``
#: config), unit-variance Gaussian image and reward heads, a Bernoulli continue head, λ-returns from
#: a target critic copied every 100 updates, dynamics gradients for continuous and Reinforce for
#: discrete actions (continuous ones from a Normal truncated to [-1, 1]), entropy 1e-4, Adam with eps 1e-5, weight decay 1e-6 and clipping 100; imagined
#: continue flags are the continue head's probability (its mean). For Atari the paper uses
#: ``kl_dyn_scale=0.08, kl_rep_scale=0.02``, ``free_bits=0``, ``continue_scale=5``,
#: ``ent_coef=1e-3``, ``gamma=0.999``, 600 GRU units and learning rates 2e-4 / 4e-5 / 1e-4.
V2 = V3.replace(
    version="v2",
    deter_size=200,
    hidden_size=200,
    units=400,
    layers=4,
    cnn_depth=48,
    unimix=0.0,
    layer_norm=False,
    activation="elu",
    learned_initial_state=False,
    symlog_inputs=False,
    heads="gaussian",
    kl_dyn_scale=0.8,
    kl_rep_scale=0.2,
    free_bits=1.0,
    free_bits_on_mean=True,
    continue_estimate="probability",
    model_lr=3e-4,
    model_eps=1e-5,
    model_grad_clip=100.0,
    weight_decay=1e-6,
    gamma=0.99,
    ent_coef=1e-4,
    actor_grad_continuous="backprop",
    actor_grad_discrete="reinforce",
    actor_dist="trunc_normal",
    actor_unimix=0.0,
    return_normalization=False,
    backprop_baseline=False,
    slow_critic_interval=100,
    slow_critic_decay=0.0,
    slow_critic_returns=True,
    slow_reg_scale=0.0,
    actor_lr=8e-5,
    critic_lr=8e-5,
)

#: DreamerV1 ("Dream to Control", 2020): 30-dimensional Gaussian latents (min std 0.1), a plain GRU
#: of 200 units, ELU MLPs of 400 units without LayerNorm, KL at scale 1 with 3 free nats on the batch
#: mean, unit-variance Gaussian image, reward and value heads, an actor trained only by
#: backpropagating λ-returns through the learned dynamics (tanh-Normal, mean ``5 tanh(μ/5)``, no
#: entropy bonus), exploration noise 0.3, no target critic and no return normalisation, Adam
#: 6e-4 / 8e-5 / 8e-5 with clipping 100. The continue head (the authors' ``pcont`` option) is kept so
#: that tasks with terminations work, as the authors' code has it: loss scale 10 (``pcont_scale``),
#: and its probability discounts imagination. Its free nats (and V2's one) are floors set for image
#: observations: on low-dimensional vectors the KL can stay under them, which leaves the prior
#: untrained (``train/kl_clipped`` near 1; V1's packaged CartPole-v1 and Pendulum-v1 entries set
#: ``free_bits=0``).
V1 = V2.replace(
    version="v1",
    stoch_size=30,
    cnn_depth=32,
    latent="gaussian",
    gru="standard",
    layers=3,
    kl_dyn_scale=1.0,
    kl_rep_scale=1.0,
    free_bits=3.0,
    continue_scale=10.0,
    weight_decay=0.0,
    model_lr=6e-4,
    model_eps=1e-7,
    actor_critic_eps=1e-7,
    ent_coef=0.0,
    actor_grad_continuous="backprop",
    actor_grad_discrete="backprop",
    actor_dist="tanh_normal",
    actor_min_std=1e-4,
    explore_noise=0.3,
    slow_critic_interval=1,
    slow_critic_returns=False,
)

#: The algorithm sets by version name.
PRESETS: dict[str, DreamerConfig] = {"v1": V1, "v2": V2, "v3": V3}

#: ``(batch_size, sequence_length)`` of each paper.
PAPER_BATCH: dict[str, tuple[int, int]] = {"v1": (50, 50), "v2": (16, 50), "v3": (16, 64)}


def make_config(version: str = "v3", model_size: str | None = None, **overrides: Any) -> DreamerConfig:
    """Build the preset for ``version``, resize it to ``model_size`` (``None``: the paper's own
    sizes, which for V3 is ``"S"``) and apply ``overrides`` by field name."""
    if version not in PRESETS:
        raise ValueError(f"version must be one of {SUPPORTED_VERSIONS}, got {version!r}")
    config = PRESETS[version]
    if model_size is not None:
        if model_size not in MODEL_SIZES:
            raise ValueError(f"model_size must be one of {list(MODEL_SIZES)}, got {model_size!r}")
        config = config.replace(**dataclasses.asdict(MODEL_SIZES[model_size]))
    return config.replace(**overrides)

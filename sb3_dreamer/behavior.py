"""Learning behaviour in imagination: actor, critic, λ-returns and return normalisation.

Shapes: ``H`` imagination horizon, ``N`` start states (all ``T*B`` posterior states of a batch),
``F`` feature width, ``A`` width of the model's action encoding.
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sb3_dreamer.distributions import (
    categorical_entropy,
    gaussian_entropy,
    gaussian_log_prob,
    mode_one_hot,
    sample_one_hot,
    straight_through,
    tanh_normal_entropy,
    truncated_normal_entropy,
    truncated_normal_log_prob,
    truncated_normal_sample,
)
from sb3_dreamer.networks import MLP, LayerStyle, ScalarHead
from sb3_dreamer.precision import active_compute_dtype
from sb3_dreamer.presets import DreamerConfig
from sb3_dreamer.world_model import RSSMState, WorldModel


class ActionSpec(NamedTuple):
    """The action structure the actor must produce, free of any gym type.

    Discrete actions are ``heads`` categoricals of up to ``classes`` classes each (Discrete: one
    head; MultiDiscrete: one per dimension; MultiBinary: one 2-class head per bit), encoded as
    concatenated one-hots of width ``heads * classes``; ``valid_classes[i]`` masks the classes of
    head ``i`` that exist. Continuous actions are ``dim`` values in ``[-1, 1]``.
    """

    discrete: bool
    heads: int
    classes: int
    valid_classes: tuple[int, ...]
    dim: int

    @property
    def encoding_size(self) -> int:
        """Width of the action vector seen by the world model."""
        return self.heads * self.classes if self.discrete else self.dim


#: ``softplus⁻¹(5)``: DreamerV1's tanh-Normal actor starts with std 5 before the squashing.
_TANH_NORMAL_INIT_STD = math.log(math.expm1(5.0))


def tanh_normal_mode(mean: torch.Tensor, std: torch.Tensor, iterations: int = 30) -> torch.Tensor:
    """Mode of ``tanh(u)``, ``u ~ Normal(mean, std)``, per dimension (deterministic).

    The squashed log-density at ``a = tanh(u)`` is ``-(u - mean)^2 / (2 std^2) + 2 log cosh(u)`` up
    to a constant, stationary where ``h(u) = mean + 2 std^2 tanh(u) - u`` is zero: one root, or two
    maxima around a minimum. Starting from both ends, ``mean ± 2 std^2``, each search moves
    monotonically onto the outer root on its side (a fixed-point step first, then Newton steps on
    ``h``, which converge even where ``h`` is nearly flat, as at ``2 std^2 ≈ 1``); the denser of the
    two is the mode. DreamerV1's code estimates the same mode as the likeliest of 100 samples.
    ``(..., A), (..., A) -> (..., A)`` in ``(-1, 1)``.
    """
    spread = 2.0 * std.square()
    candidates = []
    for side in (-1.0, 1.0):
        u = mean + spread * torch.tanh(mean + side * spread)
        for _ in range(iterations):
            tanh_u = torch.tanh(u)
            slope = spread * (1.0 - tanh_u.square()) - 1.0  # h'(u)
            residual = mean + spread * tanh_u - u  # h(u)
            newton = u - residual / slope.clamp(max=-1e-6)
            u = torch.where(slope < -1e-6, newton, u + residual).clamp(mean - spread, mean + spread)
        candidates.append(u)
    low, high = candidates

    def log_density(u: torch.Tensor) -> torch.Tensor:
        log_cosh = u.abs() + torch.log1p(torch.exp(-2.0 * u.abs()))
        return -0.5 * ((u - mean) / std).square() + 2.0 * log_cosh

    return torch.tanh(torch.where(log_density(high) >= log_density(low), high, low))


class Actor(nn.Module):
    """Policy network with a plain-tensor distribution.

    Discrete: one categorical per head with ``unimix`` uniform mixing. Continuous
    (``config.actor_dist``): ``"normal"``, a Gaussian with ``tanh`` mean and std
    ``(max - min) * sigmoid(s + 2) + min`` (V3; the env clips samples to the bounds),
    ``"trunc_normal"``, a Gaussian with ``tanh`` mean and std ``2 sigmoid(s / 2) + min`` truncated
    to ``[-1, 1]`` (V2), or ``"tanh_normal"``, ``tanh`` of a Gaussian with mean ``5 tanh(μ / 5)``
    and std ``softplus(s + softplus⁻¹(5)) + min`` (V1). ``forward`` returns the raw distribution
    parameters ``(..., P)``; the other methods interpret them.
    """

    def __init__(self, feature_size: int, spec: ActionSpec, config: DreamerConfig) -> None:
        super().__init__()
        self.spec = spec
        self.unimix = config.actor_unimix
        self.min_std, self.max_std = config.actor_min_std, config.actor_max_std
        self.tanh_normal = config.actor_dist == "tanh_normal"
        self.trunc_normal = config.actor_dist == "trunc_normal"
        self.explore_noise = config.explore_noise
        out = spec.heads * spec.classes if spec.discrete else 2 * spec.dim
        style = LayerStyle.of(config)
        self.net = MLP(feature_size, config.units, config.layers, out, style=style)
        if spec.discrete:
            mask = torch.zeros(spec.heads, spec.classes, dtype=torch.bool)
            for head, valid in enumerate(spec.valid_classes):
                mask[head, :valid] = True
            self.register_buffer("class_mask", mask, persistent=False)
            counts = torch.tensor(spec.valid_classes, dtype=torch.float32).unsqueeze(-1)
            self.register_buffer("uniform_probs", mask.float() / counts, persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)

    def _probs(self, params: torch.Tensor) -> torch.Tensor:
        # (..., heads*classes) -> (..., heads, classes) with invalid classes at probability 0
        logits = params.float().unflatten(-1, (self.spec.heads, self.spec.classes))
        logits = logits.masked_fill(~self.class_mask, -1e9)
        probs = torch.softmax(logits, dim=-1)
        if self.unimix > 0.0:
            probs = (1.0 - self.unimix) * probs + self.unimix * self.uniform_probs
        return probs

    def _log_probs(self, params: torch.Tensor) -> torch.Tensor:
        return torch.log(self._probs(params).clamp(min=1e-30))

    def mean_std(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of a continuous actor's Gaussian (before the squashing, for ``tanh_normal``):
        ``(..., 2 A) -> ((..., A), (..., A))``."""
        mean, std = params.float().chunk(2, dim=-1)
        if self.tanh_normal:
            return 5.0 * torch.tanh(mean / 5.0), F.softplus(std + _TANH_NORMAL_INIT_STD) + self.min_std
        if self.trunc_normal:
            return torch.tanh(mean), 2.0 * torch.sigmoid(std / 2.0) + self.min_std
        std = (self.max_std - self.min_std) * torch.sigmoid(std + 2.0) + self.min_std
        return torch.tanh(mean), std

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        """Reparameterised (continuous) or one-hot (discrete) sample: ``(..., P) -> (..., A)``."""
        if self.spec.discrete:
            probs = self._probs(params)
            return straight_through(sample_one_hot(probs), probs).flatten(-2)
        mean, std = self.mean_std(params)
        if self.trunc_normal:
            return truncated_normal_sample(mean, std)
        action = mean + std * torch.randn_like(std)
        return torch.tanh(action) if self.tanh_normal else action

    def mode(self, params: torch.Tensor) -> torch.Tensor:
        """Most likely action: ``(..., P) -> (..., A)``. For ``tanh_normal`` this is the mode of the
        squashed density (:func:`tanh_normal_mode`), as DreamerV1's code picks it, not ``tanh`` of
        the mean: with a wide std the squashed density peaks near the bounds."""
        if self.spec.discrete:
            return mode_one_hot(self._probs(params)).flatten(-2)
        mean, std = self.mean_std(params)
        return tanh_normal_mode(mean, std) if self.tanh_normal else mean

    def explore(self, action: torch.Tensor) -> torch.Tensor:
        """Exploration while collecting (``explore_noise``): Gaussian noise on continuous actions,
        clipped to ``[-1, 1]``, or a uniformly random class per discrete head with that
        probability. ``(n, A) -> (n, A)``; the identity when ``explore_noise`` is 0."""
        if self.explore_noise == 0.0:
            return action
        if not self.spec.discrete:
            return (action + self.explore_noise * torch.randn_like(action)).clamp(-1.0, 1.0)
        one_hot = action.unflatten(-1, (self.spec.heads, self.spec.classes))
        random_one_hot = sample_one_hot(self.uniform_probs.expand_as(one_hot))
        replace = torch.rand(one_hot.shape[:-1], device=action.device).unsqueeze(-1) < self.explore_noise
        return torch.where(replace, random_one_hot, one_hot).flatten(-2)

    def log_prob(self, params: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Log-likelihood of an encoded action, summed over heads/dims: ``(...)``."""
        if self.spec.discrete:
            one_hot = action.unflatten(-1, (self.spec.heads, self.spec.classes))
            return (one_hot * self._log_probs(params)).sum((-2, -1))
        mean, std = self.mean_std(params)
        if self.trunc_normal:
            return truncated_normal_log_prob(action, mean, std)
        if not self.tanh_normal:
            return gaussian_log_prob(action, mean, std)
        squashed = action.clamp(-1.0 + 1e-6, 1.0 - 1e-6)
        jacobian = torch.log1p(-(squashed**2)).sum(-1)  # log |d tanh(u) / du|
        return gaussian_log_prob(torch.atanh(squashed), mean, std) - jacobian

    def entropy(self, params: torch.Tensor) -> torch.Tensor:
        """Entropy in nats of the action distribution, summed over heads/dims: ``(...)``. For
        ``tanh_normal`` it is that of the squashed actions (:func:`tanh_normal_entropy`), so an
        entropy bonus also pulls a saturated mean back from ``±1``."""
        if self.spec.discrete:
            return categorical_entropy(self._log_probs(params)).sum(-1)
        mean, std = self.mean_std(params)
        if self.tanh_normal:
            return tanh_normal_entropy(mean, std)
        return truncated_normal_entropy(mean, std) if self.trunc_normal else gaussian_entropy(std)


def lambda_returns(
    rewards: torch.Tensor, discounts: torch.Tensor, values: torch.Tensor, lam: float | torch.Tensor
) -> torch.Tensor:
    """TD(λ) returns bootstrapped from the last value.

    ``R_H = v_H``; ``R_t = r_t + d_t * ((1 - λ_t) v_{t+1} + λ_t R_{t+1})``.

    :param rewards: ``(H, N)`` reward received on entering state ``t + 1``
    :param discounts: ``(H, N)`` ``γ * continue_{t+1}``
    :param values: ``(H + 1, N)`` critic values of states ``0..H``
    :param lam: λ, one number or one per step ``(H, N)``
    :return: ``(H, N)`` returns of states ``0..H-1``
    """
    interim = rewards + discounts * values[1:] * (1.0 - lam)
    decay = discounts * lam  # (H, N)
    returns = []
    last = values[-1]
    for t in reversed(range(rewards.shape[0])):
        last = interim[t] + decay[t] * last
        returns.append(last)
    return torch.stack(returns[::-1])


def replay_lambda_returns(
    rewards: torch.Tensor,
    is_first: torch.Tensor,
    is_terminal: torch.Tensor,
    boot: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """λ-returns along replayed real sequences, bootstrapped at every step from ``boot``.

    ``R_t = r_{t+1} + γ c_{t+1} ((1 - λ_{t+1}) b_{t+1} + λ_{t+1} R_{t+1})`` with the real reward and
    continue flag ``c = 1 - is_terminal`` of the next step, and ``λ_{t+1} = 0`` where step ``t + 1``
    ends its episode (so the return never runs into the next one); ``R_{T-1} = b_{T-1}``.

    :param rewards: ``(T, B)`` reward received on arriving at each step
    :param is_first: ``(T, B)`` episode starts (a step before one ends its episode)
    :param is_terminal: ``(T, B)`` terminal steps
    :param boot: ``(T, B)`` value estimate of every step (DreamerV3 2024: its imagined λ-return)
    :return: returns ``(T - 1, B)`` of steps ``0..T-2`` and their loss weights ``(T - 1, B)``: 0 where
        the step is the last of its episode (its successor belongs to another episode)
    """
    is_last = torch.cat([is_first[1:], torch.zeros_like(is_first[:1])])  # (T, B)
    discounts = gamma * (1.0 - is_terminal[1:])  # (T - 1, B)
    returns = lambda_returns(rewards[1:], discounts, boot, lam * (1.0 - is_last[1:]))
    return returns, 1.0 - is_last[:-1]


class ReplaySequences(NamedTuple):
    """The real replayed batch as the critic's replay loss needs it."""

    features: torch.Tensor  # (T, B, F) detached posterior features
    rewards: torch.Tensor  # (T, B)
    is_first: torch.Tensor  # (T, B)
    is_terminal: torch.Tensor  # (T, B)


class ReturnNormalizer(nn.Module):
    """EMA of the 5th and 95th return percentiles; scale ``max(limit, high - low)``.

    The statistics are buffers, so ``save``/``load`` keep them.
    """

    def __init__(self, decay: float, low_percentile: float, high_percentile: float, limit: float) -> None:
        super().__init__()
        self.decay, self.limit = decay, limit
        self.register_buffer("quantiles", torch.tensor([low_percentile / 100.0, high_percentile / 100.0]))
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))

    @torch.no_grad()
    def update(self, returns: torch.Tensor) -> torch.Tensor:
        """Update the EMA from a batch of returns and return the current scale ``()``.

        A batch with non-finite returns leaves the statistics unchanged (the update that produced
        it is skipped by the caller), so one bad batch cannot poison all later ones.
        """
        low, high = torch.quantile(returns.detach().flatten().float(), self.quantiles)
        finite = torch.isfinite(low) & torch.isfinite(high)
        new_low = self.low * self.decay + (1.0 - self.decay) * low
        new_high = self.high * self.decay + (1.0 - self.decay) * high
        self.low.copy_(torch.where(finite, new_low, self.low))
        self.high.copy_(torch.where(finite, new_high, self.high))
        return self.scale()

    def scale(self) -> torch.Tensor:
        return (self.high - self.low).clamp(min=self.limit)


class Imagination(NamedTuple):
    """A batch of imagined trajectories; index 0 is the start state."""

    features: torch.Tensor  # (H + 1, N, F)
    actions: torch.Tensor  # (H, N, A), action taken in state t
    actor_params: torch.Tensor  # (H, N, P), actor output in state t


def imagine(world_model: WorldModel, actor: Actor, start: RSSMState, horizon: int, grad: bool) -> Imagination:
    """Roll the RSSM prior forward ``horizon`` steps from every start state with the actor.

    The actor reads stopped-gradient states, as in DreamerV3; its outputs keep their graph to the
    actor's weights, so a Reinforce actor loss reuses them instead of running the actor again.
    With ``grad=False`` (Reinforce actors) the dynamics are not recorded for autograd. With
    ``grad=True`` (backprop actors) gradients flow from the imagined features back through the
    dynamics into the sampled actions and so into the actor; freeze the world model's parameters
    first to skip their weight gradients.
    """
    state = start
    features = [state.features()]
    actions, params = [], []
    for _ in range(horizon):
        with torch.enable_grad():
            step_params = actor(features[-1].detach())
        params.append(step_params)
        with torch.set_grad_enabled(grad):
            action = actor.sample(step_params)
            actions.append(action)
            state = world_model.rssm.img_step(state, action)
            features.append(state.features())
    return Imagination(torch.stack(features), torch.stack(actions), torch.stack(params))


class ActorOutput(NamedTuple):
    """Actor loss plus what the critic update reuses from the same imagined batch."""

    loss: torch.Tensor  # ()
    features: torch.Tensor  # (H, N, F) detached features of states 0..H-1, in the matmul dtype
    returns: torch.Tensor  # (H, N) detached λ-returns
    weights: torch.Tensor  # (H, N) cumulative predicted discount
    critic_raw: torch.Tensor | None  # (H, N, P) critic outputs with graph, when already computed
    metrics: dict[str, torch.Tensor]


class ActorCritic(nn.Module):
    """Actor, critic, its slow copy and the return normaliser.

    The critic's likelihood, how the slow critic follows it and what it is used for, the actor's
    gradient estimator and the return normalisation come from ``config`` (see
    :class:`~sb3_dreamer.presets.DreamerConfig`), so that one class serves V1, V2 and V3.
    """

    def __init__(self, feature_size: int, spec: ActionSpec, config: DreamerConfig) -> None:
        super().__init__()
        self.config = config
        self.spec = spec
        self.actor = Actor(feature_size, spec, config)
        style = LayerStyle.of(config)
        self.critic = ScalarHead(feature_size, config.units, config.layers, config.heads, config.reward_bins, style)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.return_normalizer = ReturnNormalizer(
            config.return_norm_decay, config.return_norm_low, config.return_norm_high, config.return_norm_limit
        )
        #: critic updates so far, for the slow critic's update interval (saved with the model)
        self.register_buffer("critic_updates", torch.zeros((), dtype=torch.long))

    @property
    def actor_grad(self) -> str:
        """``"reinforce"``, ``"backprop"`` or ``"both"`` for this action space."""
        return self.config.actor_grad_discrete if self.spec.discrete else self.config.actor_grad_continuous

    @property
    def uses_backprop(self) -> bool:
        """Whether the actor loss differentiates through the imagined dynamics."""
        return self.actor_grad != "reinforce"

    def value(self, features: torch.Tensor, slow: bool = False) -> torch.Tensor:
        """Critic mean: ``(..., F) -> (...)``."""
        net = self.slow_critic if slow else self.critic
        return net.mean(net(features))

    def actor_loss(self, world_model: WorldModel, start: RSSMState, start_continue: torch.Tensor) -> ActorOutput:
        """Imagine from ``start`` (``N`` states) and compute the actor loss.

        Backprop actors: call it with the world model's and the critic's parameters frozen
        (:meth:`sb3_dreamer.policies.DreamerPolicy.frozen`), so that gradients flow through them
        into the imagined states but not into their weights. Reinforce actors: the dynamics run
        without autograd, and the critic's forward pass on the imagined states is shared with the
        critic loss (returned as ``critic_raw``).
        """
        cfg = self.config
        grad = self.actor_grad
        backprop = self.uses_backprop
        trajectory = imagine(world_model, self.actor, start, cfg.horizon, grad=backprop)
        # Every head reads the imagined states: cast them to the matmul dtype once (a no-op in
        # float32) rather than once per head under autocast; the casts of this (H + 1, N, F)
        # tensor were a large part of a bfloat16 update.
        features = trajectory.features.to(active_compute_dtype(start.deter.device.type))  # (H + 1, N, F)
        critic_raw = None
        with torch.set_grad_enabled(backprop):
            rewards = world_model.reward(features[1:])  # (H, N)
            # a backprop actor also learns through the predicted continuation of the λ-returns, as
            # in the DreamerV1 and V2 code (a thresholded ``"mode"`` passes no gradient)
            continues = torch.cat([start_continue[None], world_model.continuation(features[1:])])  # (H + 1, N)
            if backprop:
                values = self.value(features, slow=cfg.slow_critic_returns)  # (H + 1, N)
        if not backprop:
            critic_raw = self.critic(features)  # (H + 1, N, P), graph to the critic only
            with torch.no_grad():
                slow_values = self.value(features, slow=True) if cfg.slow_critic_returns else None
            values = self.critic.mean(critic_raw.detach()) if slow_values is None else slow_values
        with torch.no_grad():
            # gamma^t times the continues up to t, without dividing by gamma (which may be 0)
            weights = torch.cumprod(torch.cat([continues[:1], cfg.gamma * continues[1:]]), 0)  # (H + 1, N)
        returns = lambda_returns(rewards, cfg.gamma * continues[1:], values, cfg.return_lambda)  # (H, N)
        if cfg.return_normalization:
            scale = self.return_normalizer.update(returns)
        else:
            scale = torch.ones((), device=returns.device)
        advantages = (returns - values[:-1]) / scale  # (H, N)

        # the actor's outputs in states 0..H-1, with their graph to its weights, from imagination
        params = trajectory.actor_params  # (H, N, P)
        if backprop:
            dynamics = advantages if cfg.backprop_baseline else returns / scale
        if grad == "backprop":
            objective = dynamics
        else:
            reinforce = self.actor.log_prob(params, trajectory.actions.detach()) * advantages.detach()
            objective = (
                reinforce
                if grad == "reinforce"
                else cfg.actor_grad_mix * dynamics + (1.0 - cfg.actor_grad_mix) * reinforce
            )
        entropy = self.actor.entropy(params)
        loss = (-(objective + cfg.ent_coef * entropy) * weights[:-1]).mean()
        metrics = {
            "actor_loss": loss.detach(),
            "entropy": entropy.detach().mean(),
            "imagined_return": returns.detach().mean(),
            "imagined_reward": rewards.detach().mean(),
            "return_scale": scale.detach(),
        }
        return ActorOutput(
            loss,
            features[:-1].detach(),
            returns.detach(),
            weights[:-1],
            None if critic_raw is None else critic_raw[:-1],
            metrics,
        )

    def critic_loss(self, actor_output: ActorOutput, replay: ReplaySequences | None = None) -> torch.Tensor:
        """Regression of the λ-returns, plus (``slow_reg_scale``) a regulariser toward the slow
        critic, weighted by the cumulative predicted discount of each imagined state.

        With ``replay_critic_scale > 0`` and the ``replay`` batch, the critic also regresses
        λ-returns computed along the real replayed sequences (real rewards and terminals,
        bootstrapped from each replayed state's imagined return; DreamerV3's 2024 code), so that
        its values stay anchored to real outcomes.
        """
        features = actor_output.features  # (H, N, F)
        raw = actor_output.critic_raw
        if raw is None:
            raw = self.critic(features)
        loss = (self._regression_loss(raw, actor_output.returns, features) * actor_output.weights).mean()
        scale = self.config.replay_critic_scale
        # a replayed return needs a next step: sequences of one step have none
        if scale > 0.0 and replay is not None and replay.rewards.shape[0] > 1:
            num_steps, batch = replay.rewards.shape
            boot = actor_output.returns[0].reshape(num_steps, batch)  # imagined return of each replayed state
            returns, weights = replay_lambda_returns(
                replay.rewards, replay.is_first, replay.is_terminal, boot, self.config.gamma, self.config.return_lambda
            )
            replay_features = replay.features[:-1].to(features.dtype)  # (T - 1, B, F)
            replay_raw = self.critic(replay_features)
            loss = loss + scale * (self._regression_loss(replay_raw, returns, replay_features) * weights).mean()
        return loss

    def _regression_loss(self, raw: torch.Tensor, targets: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of ``targets (...)`` plus the slow-critic regulariser on ``features``."""
        loss = self.critic.loss(raw, targets)
        if self.config.slow_reg_scale > 0.0:
            with torch.no_grad():
                slow_target = self.value(features, slow=True)
            loss = loss + self.config.slow_reg_scale * self.critic.loss(raw, slow_target)
        return loss

    @torch.no_grad()
    def update_slow_critic(self) -> None:
        """Count a critic update; every ``slow_critic_interval`` of them, move the slow critic
        toward the critic by ``1 - slow_critic_decay`` (an EMA step, or a hard copy at decay 0)."""
        self.critic_updates += 1
        interval = self.config.slow_critic_interval
        if interval > 1 and int(self.critic_updates) % interval != 0:
            return
        mix = 1.0 - self.config.slow_critic_decay
        for slow, fast in zip(self.slow_critic.parameters(), self.critic.parameters()):
            slow.lerp_(fast, mix)

"""The world model: RSSM latent dynamics, encoder, decoder, reward and continue heads, losses.

Shapes: ``T`` time steps, ``B`` sequences, ``N`` flattened batch, ``Z`` width of the flattened
stochastic state (``S*K`` one-hots of ``S`` categoricals with ``K`` classes, or ``S`` Gaussian
dimensions), ``R`` width of the latent distribution's raw parameters, ``D`` deterministic (GRU)
units, ``E`` embedding width, ``F = D + Z`` feature width.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sb3_dreamer.distributions import (
    categorical_kl,
    gaussian_kl,
    mode_one_hot,
    sample_one_hot,
    straight_through,
    unimix_log_probs,
    unimix_probs,
)
from sb3_dreamer.networks import (
    MLP,
    HiddenLayer,
    LayerNormGRUCell,
    LayerStyle,
    Observations,
    ScalarHead,
    StandardGRUCell,
    init_linear_,
)
from sb3_dreamer.presets import DreamerConfig


class CategoricalLatent:
    """``stoch_size`` categoricals of ``classes`` classes with ``unimix`` uniform mixing
    (DreamerV2/V3); samples are one-hots with straight-through gradients.

    Raw parameters are logits ``(..., S*K)``; statistics are log-probabilities ``(..., S, K)``.
    """

    def __init__(self, stoch_size: int, classes: int, unimix: float) -> None:
        self.stoch_size, self.classes, self.unimix = stoch_size, classes, unimix
        self.raw_size = self.width = stoch_size * classes

    def sample(self, raw: torch.Tensor, sample: bool) -> torch.Tensor:
        """A sample (or the mode) from raw parameters: ``(..., R) -> (..., Z)``."""
        probs = unimix_probs(raw.unflatten(-1, (self.stoch_size, self.classes)), self.unimix)
        stoch = sample_one_hot(probs) if sample else mode_one_hot(probs)
        return straight_through(stoch, probs).flatten(-2)

    def stats(self, raw: torch.Tensor) -> torch.Tensor:
        """Log-probabilities, in float32: ``(..., R) -> (..., S, K)``."""
        return unimix_log_probs(raw.unflatten(-1, (self.stoch_size, self.classes)), self.unimix)

    def kl(self, stats_p: torch.Tensor, stats_q: torch.Tensor) -> torch.Tensor:
        """KL(p || q) summed over the latents: ``(...)``."""
        return categorical_kl(stats_p, stats_q).sum(-1)


class GaussianLatent:
    """``stoch_size`` independent Gaussians with std ``softplus(s) + min_std`` (DreamerV1);
    samples are reparameterised.

    Raw parameters are ``[mean, s]`` ``(..., 2*S)``; statistics are ``[mean, std]`` ``(..., 2, S)``.
    """

    def __init__(self, stoch_size: int, min_std: float) -> None:
        self.stoch_size, self.min_std = stoch_size, min_std
        self.raw_size, self.width = 2 * stoch_size, stoch_size

    def stats(self, raw: torch.Tensor) -> torch.Tensor:
        """Mean and std, in float32: ``(..., R) -> (..., 2, S)``."""
        mean, std = raw.float().chunk(2, dim=-1)
        return torch.stack([mean, F.softplus(std) + self.min_std], dim=-2)

    def sample(self, raw: torch.Tensor, sample: bool) -> torch.Tensor:
        """A sample (or the mean) from raw parameters: ``(..., R) -> (..., Z)``."""
        mean, std = self.stats(raw).unbind(-2)
        return mean + std * torch.randn_like(std) if sample else mean

    def kl(self, stats_p: torch.Tensor, stats_q: torch.Tensor) -> torch.Tensor:
        """KL(p || q) summed over the dimensions: ``(...)``."""
        return gaussian_kl(*stats_p.unbind(-2), *stats_q.unbind(-2))


Latent = CategoricalLatent | GaussianLatent


def make_latent(config: DreamerConfig) -> Latent:
    """The latent distribution that ``config.latent`` names."""
    if config.latent == "gaussian":
        return GaussianLatent(config.stoch_size, config.latent_min_std)
    return CategoricalLatent(config.stoch_size, config.classes, config.unimix)


class RSSMState(NamedTuple):
    """Latent state of the RSSM for a batch of ``N`` streams."""

    deter: torch.Tensor  # (N, D)
    stoch: torch.Tensor  # (N, Z), flattened one-hot or Gaussian sample

    def features(self) -> torch.Tensor:
        """Input of every head: ``(N, F)``."""
        return torch.cat([self.deter, self.stoch], dim=-1)


class ObservedSequence(NamedTuple):
    """What :meth:`RSSM.observe` returns for a ``(T, B)`` batch."""

    deter: torch.Tensor  # (T, B, D)
    stoch: torch.Tensor  # (T, B, Z)
    post_stats: torch.Tensor  # (T, B, ...) posterior statistics, see the latent's ``stats``
    last: RSSMState  # state after the final step, (B, ...)


class RSSM(nn.Module):
    """Recurrent state-space model with a pluggable latent distribution.

    ``h_t = GRU(h_{t-1}, [z_{t-1}, a_{t-1}])``; prior ``p(z_t | h_t)``; posterior
    ``q(z_t | h_t, e_t)``. Linear maps on concatenated inputs are split per input so that the
    parts that do not depend on the recurrence (embeddings, logged actions) are computed for the
    whole sequence in one matmul before the time loop.

    The latent (categorical or Gaussian), the GRU (LayerNorm or standard), LayerNorm and the
    activation of the hidden layers, and the initial state (learned or zeros) come from ``config``.
    """

    def __init__(self, embed_size: int, action_size: int, config: DreamerConfig) -> None:
        super().__init__()
        self.deter_size = config.deter_size
        self.latent = make_latent(config)
        hidden_size = config.hidden_size
        style = LayerStyle.of(config)
        bias = not config.layer_norm
        self.img_in_stoch = init_linear_(nn.Linear(self.latent.width, hidden_size, bias=bias))
        self.img_in_action = init_linear_(nn.Linear(action_size, hidden_size, bias=False))
        self.img_in_norm = nn.LayerNorm(hidden_size, eps=1e-3) if config.layer_norm else nn.Identity()
        self.act = style.make_activation()
        if config.gru == "layer_norm":
            self.gru: nn.Module = LayerNormGRUCell(hidden_size, self.deter_size)
        else:
            self.gru = StandardGRUCell(hidden_size, self.deter_size)
        self.img_out = HiddenLayer(self.deter_size, hidden_size, style)
        self.prior_params = init_linear_(nn.Linear(hidden_size, self.latent.raw_size))
        self.obs_out_deter = init_linear_(nn.Linear(self.deter_size, hidden_size, bias=bias))
        self.obs_out_embed = init_linear_(nn.Linear(embed_size, hidden_size, bias=False))
        self.obs_out_norm = nn.LayerNorm(hidden_size, eps=1e-3) if config.layer_norm else nn.Identity()
        self.post_params = init_linear_(nn.Linear(hidden_size, self.latent.raw_size))
        self.initial_deter = nn.Parameter(torch.zeros(self.deter_size)) if config.learned_initial_state else None

    @property
    def feature_size(self) -> int:
        return self.deter_size + self.latent.width

    def initial_state(self, batch_size: int) -> RSSMState:
        """Learned initial state (``h_0 = tanh(w)``, ``z_0`` the mode of its prior) or zeros."""
        if self.initial_deter is None:
            deter = self.post_params.weight.new_zeros(1, self.deter_size)
            stoch = deter.new_zeros(1, self.latent.width)
        else:
            deter = torch.tanh(self.initial_deter)[None]  # (1, D)
            stoch = self.latent.sample(self.prior_raw(deter), sample=False)
        return RSSMState(deter.expand(batch_size, -1), stoch.expand(batch_size, -1))

    def prior_raw(self, deter: torch.Tensor) -> torch.Tensor:
        """Raw prior parameters from the deterministic state: ``(..., D) -> (..., R)``."""
        return self.prior_params(self.img_out(deter))

    def prior_stats(self, deter: torch.Tensor) -> torch.Tensor:
        """Prior statistics from the deterministic state (see the latent's ``stats``)."""
        return self.latent.stats(self.prior_raw(deter))

    @staticmethod
    def _bound_action(action: torch.Tensor) -> torch.Tensor:
        """Scale actions with magnitude above one back to one (unclipped Gaussian samples)."""
        return action / action.abs().clamp(min=1.0).detach()

    def _recurrent(self, state: RSSMState, action_proj: torch.Tensor) -> torch.Tensor:
        # action_proj: (N, hidden) projection of the previous action -> new deter (N, D)
        x = self.act(self.img_in_norm(self.img_in_stoch(state.stoch) + action_proj))
        return self.gru(x, state.deter)

    def img_step(self, state: RSSMState, action: torch.Tensor, sample: bool = True) -> RSSMState:
        """One imagined step from the prior: ``(N, ...), (N, A) -> (N, ...)``."""
        return self._prior_step(state, self.img_in_action(self._bound_action(action)), sample)

    def _prior_step(self, state: RSSMState, action_proj: torch.Tensor, sample: bool) -> RSSMState:
        """Recurrent update from the projected action ``(N, hidden)``, then the prior."""
        deter = self._recurrent(state, action_proj)
        return RSSMState(deter, self.latent.sample(self.prior_raw(deter), sample))

    def _begin_step(
        self, state: RSSMState, action: torch.Tensor, is_first: torch.Tensor
    ) -> tuple[RSSMState, torch.Tensor]:
        """Rows where ``is_first`` ``(N,)`` is set start from the initial state with no action;
        returns the state and the projected action ``(N, hidden)``, zero on those rows."""
        action_proj = self.img_in_action(self._bound_action(action))
        keep = (1.0 - is_first.to(action_proj.dtype)).unsqueeze(-1)  # (N, 1)
        if bool(is_first.any()):
            state = self._reset(state, self.initial_state(is_first.shape[0]), keep)
        return state, action_proj * keep

    def logged_prior_step(
        self, state: RSSMState, action: torch.Tensor, is_first: torch.Tensor, sample: bool = True
    ) -> RSSMState:
        """One prior step along logged data, ``state (N, ...), action (N, A), is_first (N,)``:
        :meth:`obs_step` without the observation (an episode start resets the state there too)."""
        state, action_proj = self._begin_step(state, action, is_first)
        return self._prior_step(state, action_proj, sample)

    @staticmethod
    def _reset(state: RSSMState, initial: RSSMState, keep: torch.Tensor) -> RSSMState:
        """Rows with ``keep`` 0 ``(N, 1)`` replaced by the initial state."""
        reset = 1.0 - keep
        return RSSMState(state.deter * keep + initial.deter * reset, state.stoch * keep + initial.stoch * reset)

    def _posterior_step(
        self, state: RSSMState, action_proj: torch.Tensor, embed_proj: torch.Tensor, sample: bool
    ) -> tuple[RSSMState, torch.Tensor]:
        """Recurrent update, then the posterior from the projected embedding ``(N, hidden)``;
        returns the new state and the raw posterior parameters ``(N, R)``."""
        deter = self._recurrent(state, action_proj)
        hidden = self.act(self.obs_out_norm(self.obs_out_deter(deter) + embed_proj))
        raw = self.post_params(hidden)
        return RSSMState(deter, self.latent.sample(raw, sample)), raw

    def obs_step(
        self,
        state: RSSMState,
        action: torch.Tensor,
        embed: torch.Tensor,
        is_first: torch.Tensor,
        sample: bool = True,
    ) -> RSSMState:
        """One posterior step for acting: ``state (N, ...), action (N, A), embed (N, E), is_first (N,)``."""
        state, action_proj = self._begin_step(state, action, is_first)
        return self._posterior_step(state, action_proj, self.obs_out_embed(embed), sample)[0]

    def observe(
        self,
        embed: torch.Tensor,
        action: torch.Tensor,
        is_first: torch.Tensor,
        state: RSSMState | None = None,
        sample: bool = True,
    ) -> ObservedSequence:
        """Filter a sequence through the posterior.

        :param embed: ``(T, B, E)`` observation embeddings
        :param action: ``(T, B, A)`` action that led to each observation
        :param is_first: ``(T, B)`` episode starts; the state is reset to the initial one there.
            With ``state=None`` every sequence starts from the initial state.
        :param state: state before the first step, batch ``B``
        :param sample: sample the posterior (training, exploration) or take its mode
        """
        num_steps, batch = is_first.shape
        if state is None:
            is_first = is_first.clone()
            is_first[0] = 1.0
        # acting mostly continues episodes: skip the initial-state MLP when nothing resets
        initial = self.initial_state(batch) if bool(is_first.any()) else None
        if state is None:
            state = initial
        keep = (1.0 - is_first.to(embed.dtype)).unsqueeze(-1)  # (T, B, 1)
        action_proj = self.img_in_action(self._bound_action(action)) * keep  # (T, B, hidden)
        embed_proj = self.obs_out_embed(embed)  # (T, B, hidden)
        deters, stochs, raws = [], [], []
        for t in range(num_steps):
            if initial is not None:
                state = self._reset(state, initial, keep[t])
            state, raw = self._posterior_step(state, action_proj[t], embed_proj[t], sample)  # raw (B, R)
            deters.append(state.deter)
            stochs.append(state.stoch)
            raws.append(raw)
        post_stats = self.latent.stats(torch.stack(raws))  # (T, B, ...)
        return ObservedSequence(torch.stack(deters), torch.stack(stochs), post_stats, state)


class WorldModelOutput(NamedTuple):
    """Loss, detached posterior states for imagination, and scalar metrics."""

    loss: torch.Tensor  # ()
    posterior: RSSMState  # (T*B, ...) detached
    start_continue: torch.Tensor  # (T*B,) 1 - is_terminal of each start state
    metrics: dict[str, torch.Tensor]


class WorldModel(nn.Module):
    """Encoder + RSSM + decoder, reward and continue heads, and the world-model loss of the
    configured version (the heads' likelihoods, KL scales and free bits come from ``config``)."""

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        embed_size: int,
        action_size: int,
        config: DreamerConfig,
    ) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.decoder = decoder
        self.rssm = RSSM(embed_size, action_size, config)
        feature_size = self.rssm.feature_size
        style = LayerStyle.of(config)
        self.reward_head = ScalarHead(
            feature_size, config.units, config.layers, config.heads, config.reward_bins, style
        )
        self.continue_head = MLP(feature_size, config.units, config.layers, 1, style=style)

    def reward(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted reward: ``(..., F) -> (...)``."""
        return self.reward_head.mean(self.reward_head(features))

    def continuation(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted continue flag (1 = episode goes on) for imagination: ``(..., F) -> (...)``.

        ``config.continue_estimate == "mode"`` thresholds the Bernoulli at 0.5 (DreamerV3, 2023);
        ``"probability"`` uses its probability (the authors' 2024 code), which lets imagined returns
        feel a termination risk before the head is confident about it.
        """
        logits = self.continue_head(features).squeeze(-1).float()
        if self.config.continue_estimate == "probability":
            return torch.sigmoid(logits)
        return (logits > 0.0).float()

    @torch.no_grad()
    def open_loop(
        self, observations: Observations, actions: torch.Tensor, is_first: torch.Tensor, context: int = 5
    ) -> dict[str, torch.Tensor]:
        """Decoded images of a ``(T, B)`` batch: reconstructions of the first ``context`` steps
        (posterior), then the open-loop prediction of the rest from the logged actions (prior),
        restarted from the initial state where a new episode begins.

        :return: ``{image key: (T, B, C, H, W)}`` in ``[0, 1]``
        """
        if not 0 < context < is_first.shape[0]:
            raise ValueError(f"context must lie in [1, {is_first.shape[0] - 1}], got {context}")
        embed = self.encoder(observations)
        observed = self.rssm.observe(embed[:context], actions[:context], is_first[:context], sample=False)
        state = observed.last
        features = [torch.cat([observed.deter, observed.stoch], dim=-1)]
        for t in range(context, is_first.shape[0]):
            # a window may cross into a new episode: its first frame is predicted from the initial state
            state = self.rssm.logged_prior_step(state, actions[t], is_first[t], sample=False)
            features.append(state.features()[None])
        all_features = torch.cat(features)  # (T, B, F)
        return {key: decoder.predict(all_features).clamp(0.0, 1.0) for key, decoder in self.decoder.cnns.items()}

    def kl_losses(self, post_stats: torch.Tensor, prior_stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dynamics and representation KL losses ``()``, before their scales.

        The dynamics loss trains the prior toward the (stopped) posterior, the representation loss
        the posterior toward the (stopped) prior; their values are equal, their gradients differ.
        Each is clipped below at ``free_bits`` per time step and then averaged (V3), or averaged
        and then clipped with ``free_bits_on_mean`` (V1's free nats); a clipped term has no gradient.
        """
        kl = self.rssm.latent.kl
        dyn = kl(post_stats.detach(), prior_stats)  # (T, B)
        rep = kl(post_stats, prior_stats.detach())
        free = self.config.free_bits
        if self.config.free_bits_on_mean:
            return dyn.mean().clamp(min=free), rep.mean().clamp(min=free)
        return dyn.clamp(min=free).mean(), rep.clamp(min=free).mean()

    def clipped_kl_share(self, kl: torch.Tensor) -> torch.Tensor:
        """Share of the KL terms that :meth:`kl_losses` clips at ``free_bits`` (and so trains
        nothing with): of the time steps (V3), or 1 / 0 for the batch mean with
        ``free_bits_on_mean``. Near 1 means the prior is barely trained. ``(T, B) -> ()``."""
        free = self.config.free_bits
        below = kl.mean() <= free if self.config.free_bits_on_mean else kl <= free
        return below.float().mean()

    def loss(
        self,
        observations: Observations,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        is_first: torch.Tensor,
        is_terminal: torch.Tensor,
    ) -> WorldModelOutput:
        """World-model loss of a ``(T, B)`` batch; ``actions`` already in model encoding ``(T, B, A)``."""
        embed = self.encoder(observations)  # (T, B, E)
        observed = self.rssm.observe(embed, actions, is_first)
        prior_stats = self.rssm.prior_stats(observed.deter)  # (T, B, ...)
        features = torch.cat([observed.deter, observed.stoch], dim=-1)  # (T, B, F)
        reconstruction = self.decoder(features, observations)
        reward_loss = self.reward_head.loss(self.reward_head(features), rewards)
        continue_target = 1.0 - is_terminal
        continue_loss = F.binary_cross_entropy_with_logits(
            self.continue_head(features).squeeze(-1).float(), continue_target, reduction="none"
        )
        dyn, rep = self.kl_losses(observed.post_stats, prior_stats)
        cfg = self.config
        heads_loss = (
            cfg.decoder_scale * reconstruction + cfg.reward_scale * reward_loss + cfg.continue_scale * continue_loss
        )  # (T, B)
        total = heads_loss.mean() + cfg.kl_dyn_scale * dyn + cfg.kl_rep_scale * rep
        posterior = RSSMState(observed.deter.detach().flatten(0, 1), observed.stoch.detach().flatten(0, 1))
        kl_per_step = self.rssm.latent.kl(observed.post_stats.detach(), prior_stats.detach())  # (T, B)
        metrics = {
            "world_model_loss": total.detach(),
            "reconstruction_loss": reconstruction.detach().mean(),
            "reward_loss": reward_loss.detach().mean(),
            "continue_loss": continue_loss.detach().mean(),
            "kl": kl_per_step.mean(),
            "kl_clipped": self.clipped_kl_share(kl_per_step),
        }
        return WorldModelOutput(total, posterior, continue_target.flatten(), metrics)

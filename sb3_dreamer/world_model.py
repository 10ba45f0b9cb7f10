"""The world model: RSSM latent dynamics, encoder, decoder, reward and continue heads, losses.

Shapes: ``T`` time steps, ``B`` sequences, ``N`` flattened batch, ``S`` latents of ``K`` classes,
``D`` deterministic (GRU) units, ``E`` embedding width, ``F = D + S*K`` feature width.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sb3_dreamer.distributions import (
    categorical_kl,
    mode_one_hot,
    sample_one_hot,
    straight_through,
    symlog_bins,
    two_hot_symlog_loss,
    two_hot_symlog_mean,
    unimix_log_probs,
    unimix_probs,
)
from sb3_dreamer.networks import MLP, LayerNormGRUCell, NormLinear, Observations, init_linear_
from sb3_dreamer.presets import DreamerConfig


class RSSMState(NamedTuple):
    """Latent state of the RSSM for a batch of ``N`` streams."""

    deter: torch.Tensor  # (N, D)
    stoch: torch.Tensor  # (N, S*K), flattened one-hot samples

    def features(self) -> torch.Tensor:
        """Input of every head: ``(N, F)``."""
        return torch.cat([self.deter, self.stoch], dim=-1)


class ObservedSequence(NamedTuple):
    """What :meth:`RSSM.observe` returns for a ``(T, B)`` batch."""

    deter: torch.Tensor  # (T, B, D)
    stoch: torch.Tensor  # (T, B, S*K)
    post_log_probs: torch.Tensor  # (T, B, S, K)
    last: RSSMState  # state after the final step, (B, ...)


class RSSM(nn.Module):
    """Recurrent state-space model with categorical latents (DreamerV3).

    ``h_t = GRU(h_{t-1}, [z_{t-1}, a_{t-1}])``; prior ``p(z_t | h_t)``; posterior
    ``q(z_t | h_t, e_t)``. Linear maps on concatenated inputs are split per input so that the
    parts that do not depend on the recurrence (embeddings, logged actions) are computed for the
    whole sequence in one matmul before the time loop.
    """

    def __init__(
        self,
        embed_size: int,
        action_size: int,
        deter_size: int,
        hidden_size: int,
        stoch_size: int,
        classes: int,
        unimix: float,
    ) -> None:
        super().__init__()
        self.deter_size, self.stoch_size, self.classes, self.unimix = deter_size, stoch_size, classes, unimix
        latent = stoch_size * classes
        self.img_in_stoch = init_linear_(nn.Linear(latent, hidden_size, bias=False))
        self.img_in_action = init_linear_(nn.Linear(action_size, hidden_size, bias=False))
        self.img_in_norm = nn.LayerNorm(hidden_size, eps=1e-3)
        self.gru = LayerNormGRUCell(hidden_size, deter_size)
        self.img_out = NormLinear(deter_size, hidden_size)
        self.prior_logits = init_linear_(nn.Linear(hidden_size, latent))
        self.obs_out_deter = init_linear_(nn.Linear(deter_size, hidden_size, bias=False))
        self.obs_out_embed = init_linear_(nn.Linear(embed_size, hidden_size, bias=False))
        self.obs_out_norm = nn.LayerNorm(hidden_size, eps=1e-3)
        self.post_logits = init_linear_(nn.Linear(hidden_size, latent))
        self.initial_deter = nn.Parameter(torch.zeros(deter_size))

    @property
    def feature_size(self) -> int:
        return self.deter_size + self.stoch_size * self.classes

    def initial_state(self, batch_size: int) -> RSSMState:
        """Learned initial state: ``h_0 = tanh(w)`` and ``z_0`` the mode of its prior."""
        deter = torch.tanh(self.initial_deter)[None]  # (1, D)
        stoch = mode_one_hot(self.prior_logits_of(deter)).flatten(-2)
        return RSSMState(deter.expand(batch_size, -1), stoch.expand(batch_size, -1))

    def prior_logits_of(self, deter: torch.Tensor) -> torch.Tensor:
        """Prior logits from the deterministic state: ``(..., D) -> (..., S, K)``."""
        return self.prior_logits(self.img_out(deter)).unflatten(-1, (self.stoch_size, self.classes))

    def prior_log_probs(self, deter: torch.Tensor) -> torch.Tensor:
        """Prior log-probabilities (with unimix) from the deterministic state: ``(..., S, K)``."""
        return unimix_log_probs(self.prior_logits_of(deter), self.unimix)

    @staticmethod
    def _bound_action(action: torch.Tensor) -> torch.Tensor:
        """Scale actions with magnitude above one back to one (unclipped Gaussian samples)."""
        return action / action.abs().clamp(min=1.0).detach()

    def _recurrent(self, state: RSSMState, action_proj: torch.Tensor) -> torch.Tensor:
        # action_proj: (N, hidden) projection of the previous action -> new deter (N, D)
        x = F.silu(self.img_in_norm(self.img_in_stoch(state.stoch) + action_proj))
        return self.gru(x, state.deter)

    def img_step(self, state: RSSMState, action: torch.Tensor, sample: bool = True) -> RSSMState:
        """One imagined step from the prior: ``(N, ...), (N, A) -> (N, ...)``."""
        deter = self._recurrent(state, self.img_in_action(self._bound_action(action)))
        probs = unimix_probs(self.prior_logits_of(deter), self.unimix)
        stoch = sample_one_hot(probs) if sample else mode_one_hot(probs)
        return RSSMState(deter, straight_through(stoch, probs).flatten(-2))

    def obs_step(
        self,
        state: RSSMState,
        action: torch.Tensor,
        embed: torch.Tensor,
        is_first: torch.Tensor,
        sample: bool = True,
    ) -> tuple[RSSMState, torch.Tensor]:
        """One posterior step for acting: ``state (N, ...), action (N, A), embed (N, E), is_first (N,)``."""
        observed = self.observe(embed[None], action[None], is_first[None], state, sample=sample)
        return observed.last, observed.post_log_probs[0]

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
        deters, stochs, logits = [], [], []
        for t in range(num_steps):
            if initial is not None:
                reset = 1.0 - keep[t]
                state = RSSMState(
                    state.deter * keep[t] + initial.deter * reset,
                    state.stoch * keep[t] + initial.stoch * reset,
                )
            deter = self._recurrent(state, action_proj[t])
            hidden = F.silu(self.obs_out_norm(self.obs_out_deter(deter) + embed_proj[t]))
            step_logits = self.post_logits(hidden).unflatten(-1, (self.stoch_size, self.classes))
            probs = unimix_probs(step_logits, self.unimix)
            stoch = sample_one_hot(probs) if sample else mode_one_hot(probs)
            state = RSSMState(deter, straight_through(stoch, probs).flatten(-2))
            deters.append(state.deter)
            stochs.append(state.stoch)
            logits.append(step_logits)
        post_log_probs = unimix_log_probs(torch.stack(logits), self.unimix)  # (T, B, S, K)
        return ObservedSequence(torch.stack(deters), torch.stack(stochs), post_log_probs, state)


class WorldModelOutput(NamedTuple):
    """Loss, detached posterior states for imagination, and scalar metrics."""

    loss: torch.Tensor  # ()
    posterior: RSSMState  # (T*B, ...) detached
    start_continue: torch.Tensor  # (T*B,) 1 - is_terminal of each start state
    metrics: dict[str, torch.Tensor]


class WorldModel(nn.Module):
    """Encoder + RSSM + decoder, reward and continue heads, with DreamerV3's losses."""

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
        self.rssm = RSSM(
            embed_size,
            action_size,
            config.deter_size,
            config.hidden_size,
            config.stoch_size,
            config.classes,
            config.unimix,
        )
        feature_size = self.rssm.feature_size
        self.reward_head = MLP(feature_size, config.units, config.layers, config.reward_bins, out_scale=0.0)
        self.continue_head = MLP(feature_size, config.units, config.layers, 1)
        self.register_buffer("reward_bins", symlog_bins(config.reward_bins), persistent=False)

    def reward(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted reward (mean of the two-hot head): ``(..., F) -> (...)``."""
        return two_hot_symlog_mean(self.reward_head(features), self.reward_bins)

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
        (posterior), then the open-loop prediction of the rest from the logged actions (prior).

        :return: ``{image key: (T, B, C, H, W)}`` in ``[0, 1]``
        """
        if not 0 < context < is_first.shape[0]:
            raise ValueError(f"context must lie in [1, {is_first.shape[0] - 1}], got {context}")
        embed = self.encoder(observations)
        observed = self.rssm.observe(embed[:context], actions[:context], is_first[:context], sample=False)
        state = observed.last
        features = [torch.cat([observed.deter, observed.stoch], dim=-1)]
        for t in range(context, is_first.shape[0]):
            state = self.rssm.img_step(state, actions[t], sample=False)
            features.append(state.features()[None])
        all_features = torch.cat(features)  # (T, B, F)
        return {key: decoder.predict(all_features).clamp(0.0, 1.0) for key, decoder in self.decoder.cnns.items()}

    def kl_losses(
        self, post_log_probs: torch.Tensor, prior_log_probs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Dynamics and representation KL terms, each clipped below at ``free_bits``: ``(T, B)``.

        The dynamics loss trains the prior toward the (stopped) posterior, the representation loss
        the posterior toward the (stopped) prior; their values are equal, their gradients differ.
        """
        free = self.config.free_bits
        dyn = categorical_kl(post_log_probs.detach(), prior_log_probs).sum(-1)
        rep = categorical_kl(post_log_probs, prior_log_probs.detach()).sum(-1)
        return dyn.clamp(min=free), rep.clamp(min=free)

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
        prior_log_probs = self.rssm.prior_log_probs(observed.deter)  # (T, B, S, K)
        features = torch.cat([observed.deter, observed.stoch], dim=-1)  # (T, B, F)
        reconstruction = self.decoder(features, observations)
        reward_loss = two_hot_symlog_loss(self.reward_head(features), rewards, self.reward_bins)
        continue_target = 1.0 - is_terminal
        continue_loss = F.binary_cross_entropy_with_logits(
            self.continue_head(features).squeeze(-1).float(), continue_target, reduction="none"
        )
        dyn, rep = self.kl_losses(observed.post_log_probs, prior_log_probs)
        total = (
            reconstruction
            + reward_loss
            + continue_loss
            + self.config.kl_dyn_scale * dyn
            + self.config.kl_rep_scale * rep
        ).mean()
        posterior = RSSMState(observed.deter.detach().flatten(0, 1), observed.stoch.detach().flatten(0, 1))
        metrics = {
            "world_model_loss": total.detach(),
            "reconstruction_loss": reconstruction.detach().mean(),
            "reward_loss": reward_loss.detach().mean(),
            "continue_loss": continue_loss.detach().mean(),
            "kl": categorical_kl(observed.post_log_probs.detach(), prior_log_probs.detach()).sum(-1).mean(),
        }
        return WorldModelOutput(total, posterior, continue_target.flatten(), metrics)

"""SB3 policy objects: they own the world model, the actor-critic and their optimisers.

The policy is recurrent: :meth:`DreamerPolicy.predict` takes and returns the RSSM state, like
sb3-contrib's ``RecurrentActorCriticPolicy``, so ``evaluate_policy`` and ``EvalCallback`` carry
it across steps unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from sb3_dreamer.behavior import ActionSpec, ActorCritic, ReplaySequences
from sb3_dreamer.buffers import SequenceBatch
from sb3_dreamer.networks import SINGLE_KEY, LayerStyle, MultiDecoder, MultiEncoder
from sb3_dreamer.precision import autocast
from sb3_dreamer.presets import DreamerConfig, make_config
from sb3_dreamer.world_model import RSSMState, WorldModel

#: The RSSM state passed through ``predict``: ``(deter (n, D), stoch (n, S*K), prev_action (n, A))``.
DreamerState = tuple[np.ndarray, np.ndarray, np.ndarray]

SUPPORTED_ACTION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def action_spec_from_space(action_space: spaces.Space) -> ActionSpec:
    """Describe a gymnasium action space for the actor; unsupported spaces raise ``TypeError``."""
    if isinstance(action_space, spaces.Discrete):
        return ActionSpec(True, 1, int(action_space.n), (int(action_space.n),), 1)
    if isinstance(action_space, spaces.MultiDiscrete):
        if action_space.nvec.ndim != 1:
            raise TypeError(f"MultiDiscrete action spaces must be one-dimensional, got nvec {action_space.nvec}")
        nvec = tuple(int(n) for n in action_space.nvec)
        return ActionSpec(True, len(nvec), max(nvec), nvec, len(nvec))
    if isinstance(action_space, spaces.MultiBinary):
        if len(action_space.shape) != 1:
            # SB3's replay buffers store actions as flat vectors
            raise TypeError(
                f"MultiBinary action spaces must be one-dimensional, got shape {action_space.shape}; "
                "flatten them, e.g. MultiBinary(n) with a wrapper that reshapes the action"
            )
        bits = int(action_space.shape[0])
        return ActionSpec(True, bits, 2, (2,) * bits, bits)
    if isinstance(action_space, spaces.Box):
        if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
            raise ValueError(f"Box action space needs finite bounds, got {action_space}")
        return ActionSpec(False, 0, 0, (), int(np.prod(action_space.shape)))
    raise TypeError(
        f"Dreamer does not support the action space {action_space}; "
        f"supported: {[space.__name__ for space in SUPPORTED_ACTION_SPACES]}"
    )


def batch_size_of(observation: torch.Tensor | dict[str, torch.Tensor]) -> int:
    """Leading dimension of an observation batch (of its first entry for Dict observations)."""
    if isinstance(observation, dict):
        return next(iter(observation.values())).shape[0]
    return observation.shape[0]


def state_to_numpy(state: RSSMState, action: torch.Tensor) -> DreamerState:
    """The ``(deter, stoch, prev_action)`` numpy tuple that ``predict`` returns and accepts."""
    return state.deter.cpu().numpy(), state.stoch.cpu().numpy(), action.cpu().numpy()


class StepOutput(NamedTuple):
    """One acting step: encoded action (model input) and the new RSSM state, as tensors."""

    action: torch.Tensor  # (n, A)
    state: RSSMState


def observation_subspaces(observation_space: spaces.Space) -> dict[str, spaces.Box]:
    """The Box entries of a ``Box`` (under :data:`SINGLE_KEY`) or ``Dict`` observation space;
    ``TypeError`` naming the space for any other."""
    if isinstance(observation_space, spaces.Box):
        return {SINGLE_KEY: observation_space}
    if isinstance(observation_space, spaces.Dict):
        for key, space in observation_space.spaces.items():
            if not isinstance(space, spaces.Box):
                raise TypeError(f"Dreamer supports Dict observation spaces of Box entries only; {key!r} is {space}")
        return dict(observation_space.spaces)
    raise TypeError(
        f"Dreamer does not support the observation space {observation_space}; use a Box or a Dict of Boxes "
        "(e.g. wrap with gymnasium.wrappers.FlattenObservation or a one-hot wrapper)"
    )


def check_cnn_policy_space(observation_space: spaces.Space) -> None:
    """``ValueError`` unless the space holds an image, as SB3 refuses ``CnnPolicy`` without one
    (Dreamer's policy classes are one class, which would otherwise build an MLP silently)."""
    if any(is_image_space(space, check_channels=False) for space in observation_subspaces(observation_space).values()):
        return
    raise ValueError(
        f"CnnPolicy needs image observations (3-D uint8 Boxes with bounds [0, 255], channel-first or last), got "
        f"{observation_space}. Use MlpPolicy for vectors; give grayscale frames a channel axis (e.g. "
        "keep_dim=True); VecNormalize turns images into floats, so keep it off them (norm_obs=False, or "
        "norm_obs_keys without the image keys)"
    )


def split_observation_space(observation_space: spaces.Space) -> tuple[dict[str, tuple[int, int, int]], dict[str, int]]:
    """Image inputs ``{key: (C, H, W)}`` and vector inputs ``{key: flattened size}`` of a ``Box``
    or ``Dict`` observation space; other spaces raise ``TypeError``.

    Images are what SB3 calls images (``is_image_space``: 3-D ``uint8`` Boxes with bounds [0, 255]),
    channel-first as SB3's ``VecTransposeImage`` hands them over (channel-last ones raise
    ``ValueError``); every other Box, a 3-D ``uint8`` one with other bounds included, is a vector.
    """
    subspaces = observation_subspaces(observation_space)
    images, vectors = {}, {}
    for key, space in subspaces.items():
        if is_image_space(space, check_channels=False):
            if not is_image_space_channels_first(space):
                raise ValueError(
                    f"image observation {key!r} of shape {space.shape} is channel-last; Dreamer takes "
                    "channel-first (C, H, W) images, as SB3's VecTransposeImage hands them over (pass the env "
                    "to Dreamer, which wraps it, or wrap it yourself)"
                )
            images[key] = (int(space.shape[0]), int(space.shape[1]), int(space.shape[2]))
        else:
            vectors[key] = int(np.prod(space.shape))
    return images, vectors


def _add_time_axis(observation: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor | dict[str, torch.Tensor]:
    if isinstance(observation, dict):
        return {key: value[None] for key, value in observation.items()}
    return observation[None]


class DreamerPolicy(BasePolicy):
    """World model + actor-critic for image, vector and Dict observations.

    ``MlpPolicy``, ``CnnPolicy`` and ``MultiInputPolicy`` are all this class: images (3-D ``uint8``
    with bounds [0, 255], any size above 6x6, channel-first) get a convolutional encoder and
    decoder, every other ``Box`` is flattened into a symlog MLP encoder, and Dict observations
    combine both.

    :param observation_space: a ``Box`` or a ``Dict`` of ``Box`` entries
    :param action_space: ``Box``, ``Discrete``, ``MultiDiscrete`` or ``MultiBinary``
    :param lr_schedule: schedule of the world model's learning rate (SB3's ``learning_rate``)
    :param config: all Dreamer hyperparameters; ``None`` means DreamerV3 at size ``S``
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        config: DreamerConfig | None = None,
        normalize_images: bool = False,
    ) -> None:
        super().__init__(observation_space, action_space, normalize_images=normalize_images, squash_output=False)
        image_shapes, vector_sizes = split_observation_space(observation_space)
        self.config = config if config is not None else make_config()
        self.action_spec = action_spec_from_space(action_space)
        # gymnasium's Discrete/MultiDiscrete may count from `start`; the model counts from 0
        self._action_start = np.asarray(getattr(action_space, "start", 0), dtype=np.int64).reshape(-1)
        cfg = self.config
        style = LayerStyle.of(cfg)
        encoder = MultiEncoder(
            image_shapes, vector_sizes, cfg.units, cfg.layers, cfg.cnn_depth, cfg.symlog_inputs, style
        )
        # a unit-variance Gaussian's negative log-likelihood is half the squared error (V1/V2)
        loss_scale = 0.5 if cfg.heads == "gaussian" else 1.0
        decoder = MultiDecoder(
            cfg.feature_size,
            image_shapes,
            vector_sizes,
            cfg.units,
            cfg.layers,
            cfg.cnn_depth,
            cfg.symlog_inputs,
            loss_scale,
            style,
        )
        self.world_model = WorldModel(encoder, decoder, encoder.embed_size, self.action_spec.encoding_size, cfg)
        self.actor_critic = ActorCritic(cfg.feature_size, self.action_spec, cfg)
        # plain Adam; V2's weight decay is applied in `_step_if_finite`, independent of the rate
        self.world_model_optimizer = torch.optim.Adam(
            self.world_model.parameters(), lr=lr_schedule(1.0), eps=cfg.model_eps
        )
        self.actor_optimizer = torch.optim.Adam(self.actor_critic.actor.parameters())
        self.critic_optimizer = torch.optim.Adam(self.actor_critic.critic.parameters())
        self.apply_optimizer_settings()
        self.optimizer = self.world_model_optimizer
        #: dtype of matmuls under autocast; set by ``Dreamer`` from its ``precision`` argument
        self.compute_dtype = torch.float32

    def apply_optimizer_settings(self) -> None:
        """Set the Adam epsilons and the actor's and critic's learning rates from ``config`` (the
        world model's rate follows the algorithm's ``learning_rate`` schedule at every update)."""
        cfg = self.config
        settings = (
            (self.world_model_optimizer, {"eps": cfg.model_eps}),
            (self.actor_optimizer, {"lr": cfg.actor_lr, "eps": cfg.actor_critic_eps}),
            (self.critic_optimizer, {"lr": cfg.critic_lr, "eps": cfg.actor_critic_eps}),
        )
        for optimizer, values in settings:
            for group in optimizer.param_groups:
                group.update(values)

    def set_training_mode(self, mode: bool) -> None:
        """Put every module in training or evaluation mode; a no-op when already in ``mode``
        (walking all submodules costs about 1 ms, a third of a ``predict`` at size ``S``)."""
        if mode != self.training:
            super().set_training_mode(mode)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(config=self.config, lr_schedule=self._dummy_schedule)
        return data

    # ------------------------------------------------------------------ actions
    def encode_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Buffer/env actions ``(..., action_dim)`` to the model encoding ``(..., A)``."""
        spec = self.action_spec
        if not spec.discrete:
            return actions.float()
        indices = actions.long().clamp(min=0)
        return nn.functional.one_hot(indices, spec.classes).flatten(-2).float()

    def buffer_actions_from_env(self, env_actions: np.ndarray) -> np.ndarray:
        """Env-format actions (a batch) to what the replay buffer stores: ``(n, action_dim)`` float32."""
        n = len(env_actions)
        if isinstance(self.action_space, spaces.Box):
            return self.scale_action(np.asarray(env_actions)).astype(np.float32).reshape(n, -1)
        indices = np.asarray(env_actions, dtype=np.int64).reshape(n, -1)
        if isinstance(self.action_space, (spaces.Discrete, spaces.MultiDiscrete)):
            indices = indices - self._action_start
        return indices.astype(np.float32)

    def decode_actions(self, encoded: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Model actions ``(n, A)`` to ``(env_action, buffer_action)`` numpy arrays.

        ``buffer_action`` is what the replay buffer stores: indices for discrete spaces, the action
        clipped to ``[-1, 1]`` for ``Box``; ``env_action`` is rescaled to the Box bounds and lies
        within them.
        """
        spec = self.action_spec
        if spec.discrete:
            indices = encoded.unflatten(-1, (spec.heads, spec.classes)).argmax(-1).cpu().numpy()
            if isinstance(self.action_space, spaces.Discrete):
                env_action = indices[:, 0] + self._action_start[0]
            elif isinstance(self.action_space, spaces.MultiDiscrete):
                env_action = indices + self._action_start
            else:
                env_action = indices.reshape((-1, *self.action_space.shape))
            return env_action.astype(self.action_space.dtype), indices.astype(np.float32)
        scaled = encoded.clamp(-1.0, 1.0).cpu().numpy().astype(np.float32)
        env_action = self.unscale_action(scaled.reshape((-1, *self.action_space.shape)))
        # rescaling in float32 can land one ulp outside the bounds (e.g. high 0.08013236 -> 0.08013248)
        env_action = np.clip(env_action, self.action_space.low, self.action_space.high)
        return env_action.astype(self.action_space.dtype), scaled

    # ------------------------------------------------------------------ acting
    def initial_state(self, n: int) -> RSSMState:
        """Zero state for ``n`` streams; it is replaced by the learned initial state on a first step."""
        cfg = self.config
        return RSSMState(
            torch.zeros(n, cfg.deter_size, device=self.device),
            torch.zeros(n, cfg.stoch_width, device=self.device),
        )

    @torch.inference_mode()
    def step(
        self,
        observation: torch.Tensor | dict[str, torch.Tensor],
        state: RSSMState,
        prev_action: torch.Tensor,
        is_first: torch.Tensor,
        deterministic: bool,
        explore: bool = False,
    ) -> StepOutput:
        """Posterior update with the new observation, then an action from the actor.

        :param observation: ``(n, *obs_shape)``
        :param state: RSSM state before this observation, batch ``n``
        :param prev_action: ``(n, A)`` encoded action that led to ``observation``
        :param is_first: ``(n,)`` float, 1 where a new episode starts
        :param deterministic: the actor's mode instead of a sample
        :param explore: add the collection-time exploration (``explore_noise``) to a sampled
            action; only ``learn`` collects with it, ``predict`` samples the actor alone (as SB3's
            TD3 leaves out its action noise)
        """
        # float32 on purpose: at acting batch sizes the weight casts of autocast cost more than they save
        embed = self.world_model.encoder(_add_time_axis(observation))[0]  # (n, E)
        rssm = self.world_model.rssm
        state = rssm.obs_step(state, prev_action, embed, is_first, sample=not deterministic)
        params = self.actor_critic.actor(state.features())
        actor = self.actor_critic.actor
        if deterministic:
            action = actor.mode(params)
        else:
            action = actor.sample(params)
            if explore:
                action = actor.explore(action)
        if not self.action_spec.discrete:
            # the action the env executes and the replay buffer stores, hence what the RSSM is
            # trained on and must see next step (V3's Normal samples can leave [-1, 1])
            action = action.clamp(-1.0, 1.0)
        return StepOutput(action, state)

    def step_from_numpy(
        self,
        observation: torch.Tensor | dict[str, torch.Tensor],
        state: DreamerState | None,
        episode_start: np.ndarray | None,
        deterministic: bool,
        explore: bool = False,
    ) -> StepOutput:
        """:meth:`step` with the state in its numpy form; ``state=None`` starts every stream anew,
        and rows where ``episode_start`` is set are reset."""
        n = batch_size_of(observation)
        if state is None:
            rssm_state, prev_action = self.initial_state(n), torch.zeros(n, self.action_spec.encoding_size)
            is_first = np.ones(n, dtype=np.float32)
        else:
            rssm_state = RSSMState(*(torch.as_tensor(part, device=self.device) for part in state[:2]))
            prev_action = torch.as_tensor(state[2])
            is_first = np.zeros(n, dtype=np.float32)
        if episode_start is not None:
            is_first = np.maximum(is_first, np.asarray(episode_start, dtype=np.float32))
        return self.step(
            observation,
            rssm_state,
            prev_action.to(self.device),
            torch.as_tensor(is_first, device=self.device),
            deterministic,
            explore,
        )

    def _check_observation_dtypes(self, observation: np.ndarray | dict[str, np.ndarray]) -> None:
        """Images must come as uint8 (a float image would skip the /255 scaling silently); other
        inputs must be numeric."""
        images, _ = split_observation_space(self.observation_space)
        if isinstance(observation, dict):
            if not isinstance(self.observation_space, spaces.Dict):
                raise TypeError(f"got a dict observation for the observation space {self.observation_space}")
            missing = set(self.observation_space.spaces) - set(observation)
            if missing:
                raise ValueError(f"observation is missing the keys {sorted(missing)}")
            entries = {key: np.asarray(observation[key]) for key in self.observation_space.spaces}
        else:
            if isinstance(self.observation_space, spaces.Dict):
                raise TypeError(f"expected a dict observation with keys {sorted(self.observation_space.spaces)}")
            entries = {SINGLE_KEY: np.asarray(observation)}
        for key, value in entries.items():
            if key in images and value.dtype != np.uint8:
                raise TypeError(f"image observation {key!r} must be uint8 (0..255), got {value.dtype}")
            if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
                raise TypeError(f"observation {key!r} must be numeric, got {value.dtype}")
            if np.issubdtype(value.dtype, np.inexact) and not np.isfinite(value).all():
                raise ValueError(f"observation {key!r} holds NaN or infinite values")

    def _check_state(self, state: DreamerState, n: int) -> DreamerState:
        """``state`` as the float32 arrays ``step_from_numpy`` takes, after checking its structure,
        shapes and values (any real dtype and any sequence of three arrays are accepted, as
        RecurrentPPO does)."""
        cfg = self.config
        expected = (
            (n, cfg.deter_size),
            (n, cfg.stoch_width),
            (n, self.action_spec.encoding_size),
        )
        if not isinstance(state, (tuple, list)) or len(state) != 3:
            raise TypeError("state must be the (deter, stoch, prev_action) tuple returned by predict")
        parts = tuple(np.asarray(part) for part in state)
        for part in parts:
            if not (np.issubdtype(part.dtype, np.number) or part.dtype == np.bool_):
                raise TypeError(f"state entries must be numeric arrays, got {part.dtype}")
        shapes = tuple(part.shape for part in parts)
        if shapes != expected:
            raise ValueError(
                f"state shapes {shapes} do not match a batch of {n} observations; expected {expected}. "
                "Pass state=None to start fresh when the number of environments changes."
            )
        if not all(np.isfinite(part).all() for part in parts):
            raise ValueError("state holds NaN or infinite values")
        deter, stoch, prev_action = (part.astype(np.float32, copy=False) for part in parts)
        return deter, stoch, prev_action

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: DreamerState | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, DreamerState]:
        """Action for each observation, carrying the RSSM state (like RecurrentPPO).

        :param observation: one observation or a batch ``(n, *obs_shape)``
        :param state: state returned by the previous call, or ``None`` to start new episodes
        :param episode_start: ``(n,)`` bools; those rows are reset before this step
        :param deterministic: posterior mode and actor mode instead of samples
        :return: the action(s) in the env's format and the next state
        """
        self.set_training_mode(False)
        self._check_observation_dtypes(observation)
        obs_tensor, vectorized_env = self.obs_to_tensor(observation)
        n = batch_size_of(obs_tensor)
        if state is not None:
            state = self._check_state(state, n)
        if episode_start is not None:
            episode_start = np.asarray(episode_start, dtype=np.float32).reshape(-1)
            if episode_start.shape[0] != n:
                raise ValueError(f"episode_start has {episode_start.shape[0]} entries for {n} observations")
        output = self.step_from_numpy(obs_tensor, state, episode_start, deterministic)
        env_action, _ = self.decode_actions(output.action)
        next_state = state_to_numpy(output.state, output.action)
        if not vectorized_env:
            env_action = env_action.squeeze(axis=0)
        return env_action, next_state

    def _predict(self, observation: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        raise NotImplementedError("Dreamer is recurrent: call predict(observation, state, episode_start)")

    # ------------------------------------------------------------------ learning
    @contextlib.contextmanager
    def frozen(self, *modules: nn.Module) -> Iterator[None]:
        """Temporarily stop weight gradients of ``modules`` (activations still carry gradients)."""
        params = [p for module in modules for p in module.parameters() if p.requires_grad]
        for param in params:
            param.requires_grad_(False)
        try:
            yield
        finally:
            for param in params:
                param.requires_grad_(True)

    def _step_if_finite(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, grad_norm: torch.Tensor) -> bool:
        """Apply ``optimizer`` only when the loss and the gradient norm are finite.

        With ``weight_decay`` > 0 (V2) every parameter is first multiplied by ``1 - weight_decay``,
        as the DreamerV2 authors' optimiser does: a decay per update that does not scale with the
        learning rate (``AdamW``'s ``lr * weight_decay`` would be 3e-10 at V2's rates, below
        float32's resolution around 1, so no decay at all).
        """
        finite = bool(torch.isfinite(torch.stack([loss.detach().float(), grad_norm.float()])).all())
        if finite:
            if self.config.weight_decay > 0.0:
                params = [param for group in optimizer.param_groups for param in group["params"]]
                with torch.no_grad():
                    torch._foreach_mul_(params, 1.0 - self.config.weight_decay)
            optimizer.step()
        return finite

    def train_step(self, batch: SequenceBatch) -> tuple[dict[str, torch.Tensor], tuple[bool, bool, bool]]:
        """One Dreamer update: world model, then actor (imagining with the updated world model),
        then critic and its slow copy, as in DreamerV3.

        A part whose loss or gradient is not finite is not applied.

        :return: metrics (0-d tensors; a skipped part's may be non-finite) and whether
            (world model, actor, critic) were applied
        """
        cfg = self.config
        actions = self.encode_actions(batch.actions)
        with autocast(self.device, self.compute_dtype):
            wm = self.world_model.loss(batch.observations, actions, batch.rewards, batch.is_first, batch.is_terminal)
        self.world_model_optimizer.zero_grad(set_to_none=True)
        wm.loss.backward()
        wm_norm = nn.utils.clip_grad_norm_(self.world_model.parameters(), cfg.model_grad_clip)
        wm_applied = self._step_if_finite(self.world_model_optimizer, wm.loss, wm_norm)

        frozen = (self.world_model, self.actor_critic.critic) if self.actor_critic.uses_backprop else ()
        with self.frozen(*frozen), autocast(self.device, self.compute_dtype):
            actor = self.actor_critic.actor_loss(self.world_model, wm.posterior, wm.start_continue)
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor.loss.backward()
        actor_norm = nn.utils.clip_grad_norm_(self.actor_critic.actor.parameters(), cfg.actor_critic_grad_clip)
        actor_applied = self._step_if_finite(self.actor_optimizer, actor.loss, actor_norm)

        with autocast(self.device, self.compute_dtype):
            replay = None
            if cfg.replay_critic_scale > 0.0:
                posterior = wm.posterior.features().unflatten(0, batch.is_first.shape)  # (T, B, F)
                replay = ReplaySequences(posterior, batch.rewards, batch.is_first, batch.is_terminal)
            critic_loss = self.actor_critic.critic_loss(actor, replay)
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        critic_norm = nn.utils.clip_grad_norm_(self.actor_critic.critic.parameters(), cfg.actor_critic_grad_clip)
        critic_applied = self._step_if_finite(self.critic_optimizer, critic_loss, critic_norm)
        if critic_applied:
            self.actor_critic.update_slow_critic()

        metrics = {**wm.metrics, **actor.metrics, "critic_loss": critic_loss.detach()}
        metrics.update(world_model_grad_norm=wm_norm, actor_grad_norm=actor_norm, critic_grad_norm=critic_norm)
        return metrics, (wm_applied, actor_applied, critic_applied)


MlpPolicy = DreamerPolicy
CnnPolicy = DreamerPolicy
MultiInputPolicy = DreamerPolicy

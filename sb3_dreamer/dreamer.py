"""``Dreamer``: the DreamerV3 agent as a Stable-Baselines3 off-policy algorithm."""

from __future__ import annotations

import io
import pathlib
import random
import time
from collections.abc import Iterable
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import maybe_make_env
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, RolloutReturn, Schedule
from stable_baselines3.common.utils import ConstantSchedule
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, unwrap_vec_normalize

from sb3_dreamer.buffers import SequenceReplayBuffer
from sb3_dreamer.memory import retain_freed_memory
from sb3_dreamer.policies import (
    SUPPORTED_ACTION_SPACES,
    CnnPolicy,
    DreamerPolicy,
    DreamerState,
    MlpPolicy,
    MultiInputPolicy,
    action_spec_from_space,
    check_cnn_policy_space,
    observation_subspaces,
    state_to_numpy,
)
from sb3_dreamer.precision import PRECISIONS, resolve_precision
from sb3_dreamer.presets import PAPER_BATCH, make_config

SelfDreamer = TypeVar("SelfDreamer", bound="Dreamer")

#: Constructor arguments that set a :class:`~sb3_dreamer.presets.DreamerConfig` field, and that
#: field (with a constant ``learning_rate``, which sets ``model_lr``). They only steer training, so
#: ``load`` may change them on a trained model.
LOAD_CONFIG_ARGUMENTS = {
    "gamma": "gamma",
    "return_lambda": "return_lambda",
    "imagination_horizon": "horizon",
    "actor_learning_rate": "actor_lr",
    "critic_learning_rate": "critic_lr",
    "ent_coef": "ent_coef",
}


def _constant_rate(value: Any) -> float | None:
    """A learning rate that does not change: a number, or SB3's ``ConstantSchedule`` (which
    rl_zoo3 makes of every number it is given); ``None`` for anything else."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, ConstantSchedule):
        return float(value.val)
    return None


def _config_overrides(hyperparams: dict[str, Any] | None, arguments: dict[str, Any]) -> dict[str, Any]:
    """``hyperparams`` updated with the named ``arguments`` (of :data:`LOAD_CONFIG_ARGUMENTS` and
    ``learning_rate``) that are not ``None``; a ``learning_rate`` schedule sets no field."""
    overrides = dict(hyperparams or {})
    for argument, value in arguments.items():
        if argument == "learning_rate":
            rate = _constant_rate(value)
            if rate is not None:
                overrides["model_lr"] = rate
        elif value is not None:
            overrides[LOAD_CONFIG_ARGUMENTS[argument]] = value
    return overrides


#: Constructor arguments that fix the networks: ``load`` refuses another value than the saved one.
LOAD_FIXED_ARGUMENTS = ("version", "model_size")


class Dreamer(OffPolicyAlgorithm):
    """Dreamer: learns a world model from replayed sequences and an actor-critic in imagination.

    ``version`` selects the algorithm: ``"v3"`` (DreamerV3, the default), ``"v2"`` (DreamerV2) or
    ``"v1"`` (DreamerV1); see :mod:`sb3_dreamer.presets` for what each one sets.

    Replay ratio: every ``train_freq`` vec-env steps (``train_freq * n_envs`` env steps),
    ``gradient_steps`` updates each replay ``batch_size * sequence_length`` steps. DreamerV3's
    *train ratio* (replayed steps per env step) is therefore
    ``batch_size * sequence_length * gradient_steps / (train_freq * n_envs)``; the defaults
    (16 x 64, one update every 2 steps) give DreamerV3's 512.

    :param policy: ``"MlpPolicy"`` (vectors), ``"CnnPolicy"`` (images), ``"MultiInputPolicy"`` (Dict)
        or a :class:`~sb3_dreamer.policies.DreamerPolicy` subclass
    :param env: the environment (gymnasium env, VecEnv or registered id)
    :param learning_rate: world-model learning rate (a float or an SB3 schedule); ``None``: preset
    :param buffer_size: replay capacity in rows, split evenly across envs: one row per env step
        plus one per episode start (its first observation)
    :param learning_starts: env steps of uniformly random actions before training starts
    :param batch_size: sequences per update (``B``); ``None``: the paper's (V1 50, V2/V3 16)
    :param sequence_length: steps per replayed sequence (``T``); ``None``: the paper's (V1/V2 50,
        V3 64)
    :param train_freq: update every ``train_freq`` vec-env steps (int, or SB3's ``(n, "step")``
        or ``(n, "episode")``)
    :param gradient_steps: updates per training round; ``-1``: as many as env steps collected
        since the last round (SB3's rule)
    :param gamma: discount of the λ-returns; ``None``: preset (V3 0.997, V1/V2 0.99)
    :param return_lambda: λ of the λ-returns; ``None``: preset (0.95)
    :param imagination_horizon: imagined steps per start state; ``None``: preset (15)
    :param actor_learning_rate: actor Adam learning rate; ``None``: preset (V3 3e-5, V1/V2 8e-5)
    :param critic_learning_rate: critic Adam learning rate; ``None``: preset (V3 3e-5, V1/V2 8e-5)
    :param ent_coef: actor entropy bonus; ``None``: preset (V3 3e-4, V2 1e-4, V1 0)
    :param model_size: size preset, one of :data:`sb3_dreamer.presets.MODEL_SIZES`; ``None``: the
        version's paper sizes (``"S"`` for V3)
    :param version: algorithm version, ``"v1"``, ``"v2"`` or ``"v3"``
    :param hyperparams: overrides of any :class:`~sb3_dreamer.presets.DreamerConfig` field
    :param precision: matmul precision, ``"fp32"``, ``"bf16"`` or ``"auto"`` (bfloat16 autocast
        only where the device runs it natively; losses and optimizer states stay float32).
    :param video_log_interval: every this many updates, log an imagination video (real frames,
        reconstruction then open-loop prediction, error) to tensorboard; 0 disables it. Needs image
        observations.
    :param replay_buffer_class: defaults to :class:`~sb3_dreamer.buffers.SequenceReplayBuffer`
    :param replay_buffer_kwargs: extra keyword arguments of the replay buffer
    :param policy_kwargs: extra keyword arguments of the policy
    :param stats_window_size: episodes averaged for the rollout logs
    :param tensorboard_log: tensorboard log folder, or ``None``
    :param verbose: 0 silent, 1 training info, 2 debug
    :param seed: seed of torch, numpy, the env and the replay sampler
    :param device: ``"auto"``, ``"cpu"`` or ``"cuda"``
    :param _init_setup_model: build the networks now (``load`` passes ``False``)

    On a CPU device the model calls :func:`~sb3_dreamer.memory.retain_freed_memory`, which makes
    glibc keep freed memory in the process, so that updates stop page-faulting their buffers in
    anew; the process's resident memory then stays near its peak. Set the environment variable
    ``SB3_DREAMER_RETAIN_FREED_MEMORY=0`` to keep glibc's defaults.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: DreamerPolicy
    replay_buffer: SequenceReplayBuffer

    def __init__(
        self,
        policy: str | type[DreamerPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule | None = None,
        buffer_size: int = 1_000_000,
        learning_starts: int = 1024,
        batch_size: int | None = None,
        sequence_length: int | None = None,
        train_freq: int | tuple[int, str] = 2,
        gradient_steps: int = 1,
        gamma: float | None = None,
        return_lambda: float | None = None,
        imagination_horizon: int | None = None,
        actor_learning_rate: float | None = None,
        critic_learning_rate: float | None = None,
        ent_coef: float | None = None,
        model_size: str | None = None,
        version: str = "v3",
        hyperparams: dict[str, Any] | None = None,
        precision: str = "auto",
        video_log_interval: int = 0,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if hyperparams and "version" in hyperparams:
            raise ValueError(
                f"hyperparams holds version={hyperparams['version']!r}; choose the algorithm set with the version "
                f"argument (here {version!r}), not as a hyperparameter"
            )
        overrides = _config_overrides(
            hyperparams,
            dict(
                gamma=gamma,
                return_lambda=return_lambda,
                imagination_horizon=imagination_horizon,
                actor_learning_rate=actor_learning_rate,
                critic_learning_rate=critic_learning_rate,
                ent_coef=ent_coef,
                learning_rate=learning_rate,
            ),
        )
        self.dreamer_config = make_config(version, model_size, **overrides)
        self.model_size = model_size
        self.version = version
        paper_batch_size, paper_sequence_length = PAPER_BATCH[version]
        batch_size = paper_batch_size if batch_size is None else batch_size
        sequence_length = paper_sequence_length if sequence_length is None else sequence_length
        self.sequence_length = sequence_length
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.video_log_interval = video_log_interval
        # copies: SB3 keeps (and may add to) the dicts it is given, and the caller may reuse them
        replay_buffer_kwargs = dict(replay_buffer_kwargs or {})
        policy_kwargs = dict(policy_kwargs or {})
        if "config" in policy_kwargs:
            raise ValueError(
                "policy_kwargs holds 'config', which Dreamer builds from version, model_size and hyperparams; "
                "set the configuration's fields through hyperparams={...} instead"
            )
        if env is not None:
            env = maybe_make_env(env, verbose)
            action_spec_from_space(env.action_space)
            observation_subspaces(env.observation_space)  # before SB3 wraps it: some spaces break its VecEnvs
            if policy == "CnnPolicy":
                check_cnn_policy_space(env.observation_space)
        super().__init__(
            policy,
            env,
            learning_rate=self.dreamer_config.model_lr if learning_rate is None else learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            gamma=self.dreamer_config.gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            support_multi_env=True,
            sde_support=False,
            supported_action_spaces=None,
        )
        _check_vec_normalize_layout(self._vec_normalize_env, self.env)
        self._collection_state: DreamerState | None = None
        #: updates with at least one part (world model, actor, critic) skipped as non-finite;
        #: ``_n_updates`` counts those with at least one part applied
        self._n_updates_skipped = 0
        self._rng_state: dict[str, Any] | None = None
        if _init_setup_model:
            self._setup_model()

    def _check_settings(self) -> None:
        """``TypeError``/``ValueError`` for a policy class or a count that cannot work, whether it
        came from the constructor or from ``load``'s keywords (which skip the constructor)."""
        if not (isinstance(self.policy_class, type) and issubclass(self.policy_class, DreamerPolicy)):
            raise TypeError(
                f"Dreamer needs a DreamerPolicy, got {self.policy_class!r}"
                " (a model saved by another algorithm? load it with that algorithm's class)"
            )
        _check_positive(buffer_size=self.buffer_size, batch_size=self.batch_size, sequence_length=self.sequence_length)
        if not isinstance(self.gradient_steps, (int, np.integer)) or self.gradient_steps < -1:
            raise ValueError(
                "gradient_steps must be a non-negative integer or -1 (as many as env steps), "
                f"got {self.gradient_steps!r}"
            )
        # an int, SB3's (n, unit) tuple, or its TrainFreq (a tuple too) once set up
        frequency = self.train_freq[0] if isinstance(self.train_freq, tuple) else self.train_freq
        if not isinstance(frequency, (int, np.integer)) or frequency < 1:
            raise ValueError(
                f"train_freq must be a positive integer (or (n, unit) with n >= 1), got {self.train_freq!r}"
            )
        for name in ("learning_starts", "video_log_interval"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")

    def _setup_model(self) -> None:
        self._check_settings()
        if not isinstance(self.action_space, SUPPORTED_ACTION_SPACES):
            raise TypeError(
                f"Dreamer does not support the action space {self.action_space}; "
                f"supported: {[space.__name__ for space in SUPPORTED_ACTION_SPACES]}"
            )
        if self.replay_buffer_class is None:
            self.replay_buffer_class = SequenceReplayBuffer
        if not issubclass(self.replay_buffer_class, SequenceReplayBuffer):
            raise TypeError(f"Dreamer needs a SequenceReplayBuffer, got {self.replay_buffer_class.__name__}")
        # copies again: ``load`` sets the dicts given to it as they are
        self.replay_buffer_kwargs = dict(self.replay_buffer_kwargs or {})
        self.policy_kwargs = dict(self.policy_kwargs or {})
        self.policy_kwargs.pop("config", None)  # files saved before 2026-12-06 hold it; dreamer_config is saved
        user_sequence_length = self.replay_buffer_kwargs.pop("sequence_length", self.sequence_length)
        if user_sequence_length != self.sequence_length:
            raise ValueError(
                f"replay_buffer_kwargs holds sequence_length={user_sequence_length!r} but sequence_length is "
                f"{self.sequence_length!r}; set it with the sequence_length argument (or custom_objects at load)"
            )
        self._apply_load_overrides()
        if self.gamma != self.dreamer_config.gamma:  # ``load(custom_objects={"gamma": ...})``
            self.dreamer_config = self.dreamer_config.replace(gamma=float(self.gamma))
        # the buffer and the policy get what Dreamer derives (the model's sequence_length and seed,
        # the configuration) without it entering the caller's dicts, which ``save`` keeps as given,
        # so that ``load(policy_kwargs=...)`` with the same dict compares equal, as in SB3
        given_buffer_kwargs, given_policy_kwargs = self.replay_buffer_kwargs, self.policy_kwargs
        self.replay_buffer_kwargs = {"seed": self.seed, **given_buffer_kwargs, "sequence_length": self.sequence_length}
        self.policy_kwargs = {**given_policy_kwargs, "config": self.dreamer_config}
        try:
            super()._setup_model()
        finally:
            self.replay_buffer_kwargs, self.policy_kwargs = given_buffer_kwargs, given_policy_kwargs
        if self._rng_state is not None and self.seed is not None:
            # a loaded seeded model continues the random streams it saved (``_setup_model`` just
            # reseeded them); an unseeded one leaves the process's streams alone, as in SB3
            self._restore_rng_state(self._rng_state)
            self._seed_env_for_resume()
        self._rng_state = None
        if self.video_log_interval > 0:
            if not self.policy.world_model.decoder.image_keys:
                raise ValueError(
                    f"video_log_interval={self.video_log_interval} needs image observations (CnnPolicy or "
                    "MultiInputPolicy with an image key); set it to 0 for these observations"
                )
            if self.sequence_length < 2:
                raise ValueError(
                    f"video_log_interval={self.video_log_interval} needs sequence_length >= 2 (an observed "
                    f"context and an imagined continuation), got {self.sequence_length}"
                )
        self.policy.compute_dtype = resolve_precision(self.precision, self.device)
        if self.device.type == "cpu":
            retain_freed_memory()
        if self._collection_state is not None and self._collection_state[0].shape[0] != self.n_envs:
            self._collection_state = None

    def _apply_load_overrides(self) -> None:
        """Fold the ``hyperparams`` given to ``load`` (SB3 sets its keywords as attributes before
        ``_setup_model``; ``load`` gathers the configuration keywords there) into
        ``dreamer_config``; a model being constructed has no such attribute."""
        overrides = dict(self.__dict__.pop("hyperparams", None) or {})
        if not overrides:
            return
        if "version" in overrides:
            raise ValueError(f"hyperparams holds version={overrides['version']!r}; a loaded model keeps its version")
        self.dreamer_config = self.dreamer_config.replace(**overrides)
        if "gamma" in overrides:
            self.gamma = self.dreamer_config.gamma
        if "model_lr" in overrides:  # the world model's rate is SB3's ``learning_rate`` schedule
            self.learning_rate = self.dreamer_config.model_lr

    def set_parameters(
        self,
        load_path_or_dict: str | dict[str, Any],
        exact_match: bool = True,
        device: torch.device | str = "auto",
    ) -> None:
        """Load parameters and optimizer states like SB3; the actor's and critic's learning rates
        and Adam epsilons stay this model's (the loaded optimizer states carry the saved ones)."""
        super().set_parameters(load_path_or_dict, exact_match, device)
        self.policy.apply_optimizer_settings()

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        if self.action_noise is not None:
            # e.g. load(path, action_noise=...): SB3 would accept it and Dreamer would ignore it
            raise ValueError(
                "Dreamer does not use action_noise; its exploration is the actor's own sampling "
                "(and hyperparams={'explore_noise': ...} for V1-style additive noise)"
            )
        env_will_reset = reset_num_timesteps or self._last_obs is None
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        if env_will_reset:
            self.replay_buffer.start_new_episodes()
            self._collection_state = None
        return result

    def collect_rollouts(self, *args: Any, **kwargs: Any) -> RolloutReturn:
        """SB3's collection loop; when a callback stops it, the next ``learn`` starts new episodes.

        SB3 returns on a callback's stop after ``env.step`` but before storing that step, so the env
        is one step past ``_last_obs``: continuing from there would splice the step after the lost
        one onto the stored stream (and feed the RSSM a stale observation). Forgetting ``_last_obs``
        makes the next ``learn`` reset the envs and mark new episodes in the replay buffer.
        """
        rollout = super().collect_rollouts(*args, **kwargs)
        if not rollout.continue_training:
            self._last_obs = None  # type: ignore[assignment]
        return rollout

    def _sample_action(
        self,
        learning_starts: int,
        action_noise: ActionNoise | None = None,
        n_envs: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Act with the latent state carried across steps; random actions before ``learning_starts``.

        The RSSM observes every step, also during the random warm-up, and remembers the action
        actually taken, so the latent state is right when the policy takes over.
        """
        assert self._last_obs is not None, "self._last_obs was not set"
        policy = self.policy
        obs_tensor, _ = policy.obs_to_tensor(self._last_obs)
        policy.set_training_mode(False)
        output = policy.step_from_numpy(
            obs_tensor, self._collection_state, self._last_episode_starts, deterministic=False, explore=True
        )
        encoded_action = output.action
        if self.num_timesteps < learning_starts:
            action = np.array([self.action_space.sample() for _ in range(n_envs)])
            buffer_action = policy.buffer_actions_from_env(action)
            encoded_action = policy.encode_actions(torch.as_tensor(buffer_action, device=self.device))
        else:
            action, buffer_action = policy.decode_actions(encoded_action)
        self._collection_state = state_to_numpy(output.state, encoded_action)
        return action, buffer_action

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)
        self._last_episode_starts = dones

    def train(self, gradient_steps: int, batch_size: int = 16) -> None:
        """Run ``gradient_steps`` Dreamer updates and log their mean metrics."""
        if not self.replay_buffer.can_sample():
            return
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.world_model_optimizer)
        start = time.perf_counter()
        updates_before = self._n_updates
        collected: dict[str, list[torch.Tensor]] = {}
        for _ in range(gradient_steps):
            batch = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            metrics, applied = self.policy.train_step(batch)
            partly_skipped = not all(applied)
            self._n_updates_skipped += partly_skipped
            if not any(applied):
                continue
            self._n_updates += 1
            for key, value in metrics.items():
                if partly_skipped and not torch.isfinite(value).all():
                    continue  # the skipped part's metrics would poison the logged mean
                collected.setdefault(key, []).append(value)
        elapsed = time.perf_counter() - start
        self.policy.set_training_mode(False)
        interval = self.video_log_interval
        if interval and self._n_updates // interval > updates_before // interval:
            self._log_imagination_video()
        for key, values in collected.items():
            self.logger.record(f"train/{key}", torch.stack(values).float().mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/n_updates_skipped_non_finite", self._n_updates_skipped)
        self.logger.record("train/updates_per_second", gradient_steps / max(elapsed, 1e-9))

    def _log_imagination_video(self) -> None:
        from stable_baselines3.common.logger import Video

        from sb3_dreamer.video import as_rgb, imagination_frames

        context = min(5, self.sequence_length - 1)
        # logging must not change training: the video's replay draws and latent samples come from
        # copies of the random streams, which are put back afterwards
        sampler_state = self.replay_buffer.rng.bit_generator.state
        cuda_devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices):
            frames = imagination_frames(self.policy, self.replay_buffer, context=context, env=self._vec_normalize_env)
        self.replay_buffer.rng.bit_generator.state = sampler_state
        video = torch.from_numpy(as_rgb(frames)).permute(0, 3, 1, 2)[None]  # (T, H, W, 3) -> (1, T, 3, H, W)
        self.logger.record("imagination/video", Video(video, fps=8), exclude=("stdout", "log", "json", "csv"))

    def learn(
        self: SelfDreamer,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "Dreamer",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfDreamer:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """Set the env like SB3; a ``VecNormalize`` must see the observations as the policy does
        (checked before anything changes, so a refused env leaves the model's env in place)."""
        wrapped = self._wrap_env(env, self.verbose)
        _check_vec_normalize_layout(unwrap_vec_normalize(wrapped), wrapped)
        super().set_env(wrapped, force_reset)

    def set_random_seed(self, seed: int | None = None) -> None:
        """Seed every random stream as SB3 does (python, numpy, torch, action space, env), and the
        replay buffer's own sampler, which SB3's buffers do not have."""
        super().set_random_seed(seed)
        if seed is not None and getattr(self, "replay_buffer", None) is not None:
            self.replay_buffer.seed(seed)

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfDreamer],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: torch.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfDreamer:
        """Load like SB3. For a model built with a ``seed``, the process's random streams (torch,
        numpy, Python, the action space) continue from where ``save`` left them, so that an
        interrupted run resumes reproducibly (see :meth:`save`), where SB3 would reseed them with
        that seed; an explicit ``seed`` given here reseeds them, as it does for SB3's algorithms; a
        model built without a seed leaves them alone, as in SB3. The env passed here is seeded from the saved seed (if
        the model had one) and ``num_timesteps`` (its own RNG state is not saved), not from the
        run's first seeds.

        As in SB3, keywords change settings for further training: ``hyperparams``, the arguments
        of :data:`LOAD_CONFIG_ARGUMENTS` and a constant ``learning_rate`` update the
        configuration (and the optimizers' rates), the named ones winning over ``hyperparams`` as
        in the constructor; ``version`` and ``model_size`` must give the saved networks
        (``ValueError``).
        """
        fixed = {key: kwargs.pop(key) for key in LOAD_FIXED_ARGUMENTS if key in kwargs}
        # as in the constructor, the named arguments win over ``hyperparams`` and ``None`` means unchanged;
        # a learning-rate schedule stays with SB3
        named = {argument: kwargs.pop(argument) for argument in LOAD_CONFIG_ARGUMENTS if argument in kwargs}
        rate = kwargs.get("learning_rate")
        if "learning_rate" in kwargs and (rate is None or _constant_rate(rate) is not None):
            named["learning_rate"] = kwargs.pop("learning_rate")  # None: the saved rate, not SB3's None
        overrides = _config_overrides(kwargs.pop("hyperparams", None), named)
        if overrides:
            kwargs["hyperparams"] = overrides
        model = super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)
        for key, value in fixed.items():
            saved = getattr(model, key)
            same = value == saved or (key == "model_size" and _same_sizes(model.version, value, saved))
            if not same:
                raise ValueError(
                    f"the saved model has {key}={saved!r}; load cannot change it to {value!r} (it fixes the networks)"
                )
        if kwargs.get("seed") is not None:
            model.set_random_seed(kwargs["seed"])
        return model

    def load_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase, truncate_last_traj: bool = True) -> None:
        """Load a replay buffer saved by ``save_replay_buffer``.

        It must be a :class:`~sb3_dreamer.buffers.SequenceReplayBuffer` (``TypeError`` otherwise)
        for the model's observation and action spaces, holding as many env streams as the model has
        envs, each with room for the model's ``sequence_length`` (``ValueError`` otherwise); on an
        error the model keeps its buffer. The loaded buffer samples sequences of the model's
        ``sequence_length`` and, if the model's ``replay_buffer_kwargs`` set one, its
        ``terminal_fraction`` (the ones it was saved with may differ, e.g. after
        ``load(custom_objects={"sequence_length": ...})`` or
        ``load(replay_buffer_kwargs={"terminal_fraction": ...})``); its sampler continues from its
        saved random state, and its streams end where they were saved: the next stored step starts
        a new episode in every stream.
        """
        current = self.replay_buffer
        try:
            super().load_replay_buffer(path, truncate_last_traj)
        except Exception as error:  # SB3 assigns whatever the file held before it checks it
            loaded_object = self.replay_buffer
            self.replay_buffer = current
            if loaded_object is current or isinstance(loaded_object, ReplayBuffer):
                raise
            raise TypeError(
                f"Dreamer needs a SequenceReplayBuffer, the file holds a {type(loaded_object).__name__}"
            ) from error
        loaded = self.replay_buffer
        problem: Exception | None = None
        if not isinstance(loaded, SequenceReplayBuffer):
            problem = TypeError(f"Dreamer needs a SequenceReplayBuffer, the file holds a {type(loaded).__name__}")
        elif loaded.observation_space != self.observation_space or loaded.action_space != self.action_space:
            problem = ValueError(
                f"the replay buffer was saved for observations {loaded.observation_space} and actions "
                f"{loaded.action_space}, the model has {self.observation_space} and {self.action_space}"
            )
        elif loaded.n_envs != self.n_envs:
            problem = ValueError(
                f"the replay buffer holds {loaded.n_envs} env streams but the model has {self.n_envs} envs"
            )
        elif self.sequence_length > loaded.buffer_size:
            problem = ValueError(
                f"the replay buffer's streams hold {loaded.buffer_size} steps each, fewer than the model's "
                f"sequence_length {self.sequence_length}"
            )
        if problem is not None:
            self.replay_buffer = current
            raise problem
        loaded.sequence_length = self.sequence_length
        if "terminal_fraction" in self.replay_buffer_kwargs:
            loaded.terminal_fraction = float(self.replay_buffer_kwargs["terminal_fraction"])
        loaded.start_new_episodes()

    def _seed_env_for_resume(self) -> None:
        """Seed the env of a loaded model from ``(seed, num_timesteps)`` instead of ``seed`` alone.

        ``_setup_model`` seeds the env with the run's seed, which would make every resumed run
        start its episodes from the same seeds as the run's first ones (the env's own RNG state is
        not saved: it may live in another process). A seed derived from the progress differs at
        every interruption point and is the same for every load of one file.
        """
        if self.seed is None or self.env is None:
            return
        derived = np.random.SeedSequence([self.seed, self.num_timesteps]).generate_state(1)[0]
        self.env.seed(int(derived) % 2**31)

    def _capture_rng_state(self) -> dict[str, Any]:
        """Every random stream ``learn`` draws from, except the env's and the replay buffer's own."""
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
            "action_space": self.action_space.np_random.bit_generator.state,
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def _restore_rng_state(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        np.random.set_state(state["numpy"])
        random.setstate(state["python"])
        self.action_space.np_random.bit_generator.state = state["action_space"]
        if "cuda" in state and torch.cuda.is_available():
            # one state per device of the saving machine; this one may have fewer
            for device_index, device_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(device_state, device_index)

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """Save like SB3, plus the RNG states, so that ``load`` + ``learn(reset_num_timesteps=False)``
        (with ``save_replay_buffer`` / ``load_replay_buffer`` for the buffer and its sampler) continues
        a run reproducibly: every resume from one file gives the same run. It is the uninterrupted
        run itself for a deterministic env saved at an episode's end; otherwise the env, reseeded
        and reset on load, draws differently.
        """
        self._rng_state = self._capture_rng_state()
        try:
            super().save(path, exclude=exclude, include=include)
        finally:
            self._rng_state = None

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = [
            "policy",
            "policy.world_model_optimizer",
            "policy.actor_optimizer",
            "policy.critic_optimizer",
        ]
        return state_dicts, []


def _same_sizes(version: str, model_size: str | None, saved_model_size: str | None) -> bool:
    """Whether two ``model_size`` arguments give ``version`` the same networks (``None`` is the
    paper's sizes, which for V3 are ``"S"``)."""
    try:
        return make_config(version, model_size) == make_config(version, saved_model_size)
    except ValueError:
        return False


def _check_vec_normalize_layout(vec_normalize_env: VecNormalize | None, env: VecEnv | None) -> None:
    """Refuse a ``VecNormalize`` whose observations have other shapes than the policy's.

    SB3's off-policy storage takes ``VecNormalize``'s original observations, so a wrapper outside
    it that reshapes observations leaves the replay buffer with arrays that do not fit. The usual
    case: SB3 adds its ``VecTransposeImage`` outside the user's wrappers, and channel-last images
    under a ``VecNormalize`` reach the policy channel-first but the buffer channel-last.
    """
    if vec_normalize_env is None or env is None:
        return
    normalized_space, policy_space = vec_normalize_env.observation_space, env.observation_space
    if isinstance(policy_space, spaces.Dict) and isinstance(normalized_space, spaces.Dict):
        pairs = [(key, normalized_space.spaces.get(key), space) for key, space in policy_space.spaces.items()]
    else:
        pairs = [("observation", normalized_space, policy_space)]
    reshaped = [
        f"{key} {None if inner is None else inner.shape} -> {outer.shape}"
        for key, inner, outer in pairs
        if inner is None or inner.shape != outer.shape
    ]
    if reshaped:
        raise ValueError(
            f"VecNormalize's observations have other shapes than the policy's ({', '.join(reshaped)}); SB3 "
            "stores VecNormalize's original observations, so wrappers that reshape them must be inside it. "
            "For channel-last images (which SB3 transposes outside your wrappers): "
            "VecNormalize(VecTransposeImage(venv), ...)"
        )


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")

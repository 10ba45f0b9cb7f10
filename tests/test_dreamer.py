"""SB3-contract tests: save/load, recurrent predict, action spaces, callbacks, logging."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import (
    BaseCallback,
    CheckpointCallback,
    EvalCallback,
    StopTrainingOnRewardThreshold,
)
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_dreamer import Dreamer
from sb3_dreamer.dreamer import _same_sizes
from tests.conftest import CueEnv, assert_same_policy_state, assert_same_predictions


class SpaceEnv(gym.Env):
    """Random vector observations (or samples of ``observation_space``) with a configurable action
    space; 20-step episodes."""

    def __init__(
        self,
        action_space: spaces.Space,
        obs_shape: tuple[int, ...] = (3,),
        observation_space: spaces.Space | None = None,
    ) -> None:
        self._vector = observation_space is None
        self.observation_space = spaces.Box(-1.0, 1.0, obs_shape, np.float32) if self._vector else observation_space
        self.action_space = action_space
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        assert self.action_space.contains(np.asarray(action, dtype=self.action_space.dtype)), action
        self._t += 1
        if self._vector:
            obs = self.np_random.uniform(-1, 1, self.observation_space.shape).astype(np.float32)
        else:
            obs = self.observation_space.sample()
        return obs, float(self.np_random.normal()), self._t >= 20, False, {}


ACTION_SPACES = {
    "box": spaces.Box(np.array([-2.0, 0.0]), np.array([2.0, 5.0]), dtype=np.float32),
    "discrete": spaces.Discrete(3),
    "multidiscrete": spaces.MultiDiscrete([2, 4, 3]),
    "multibinary": spaces.MultiBinary(3),
    "discrete_with_start": spaces.Discrete(3, start=-1),
    "multidiscrete_with_start": spaces.MultiDiscrete([2, 4], start=[1, -2]),
}


@pytest.mark.parametrize("name", list(ACTION_SPACES))
def test_every_supported_action_space_trains_stores_and_predicts(name, tiny_kwargs):
    space = ACTION_SPACES[name]
    model = Dreamer("MlpPolicy", SpaceEnv(space), **tiny_kwargs)
    model.learn(64)
    assert model._n_updates > 0
    # the buffer holds actions as the model encodes them: [-1, 1] for boxes, 0-based classes
    stored = model.replay_buffer.actions[: model.replay_buffer.filled[0], 0]  # (N, action_dim)
    if isinstance(space, spaces.Box):
        assert np.abs(stored).max() <= 1.0
    elif isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        sizes = np.atleast_1d(space.nvec if isinstance(space, spaces.MultiDiscrete) else space.n)
        assert (stored >= 0).all() and (stored < sizes).all() and (stored.max(0) == sizes - 1).all()
        starts = np.atleast_1d(space.start)
        np.testing.assert_array_equal(model.policy.buffer_actions_from_env((starts + sizes - 1)[None]), [sizes - 1])
    obs = np.stack([model.observation_space.sample() for _ in range(4)])
    actions, state = model.predict(obs, deterministic=False)
    assert len(actions) == 4
    for action in actions:
        assert space.contains(np.asarray(action, dtype=space.dtype))
    single, _ = model.predict(obs[0])
    assert space.contains(np.asarray(single, dtype=space.dtype))
    assert np.shape(single) == space.shape


def test_box_actions_at_the_limits_stay_inside_float32_bounds(tiny_kwargs):
    # float32 rescaling of +1 to these bounds gives 0.08013248 > high without a final clip
    space = spaces.Box(np.float32(-5.3890076), np.float32(0.08013236), (1,), np.float32)
    model = Dreamer("MlpPolicy", SpaceEnv(space), **tiny_kwargs)
    env_actions, buffer_actions = model.policy.decode_actions(torch.tensor([[1.0], [-1.0], [3.0]]))
    for action in env_actions:
        assert space.contains(action), action
    np.testing.assert_array_equal(env_actions[:, 0], [space.high[0], space.low[0], space.high[0]])
    np.testing.assert_array_equal(buffer_actions[:, 0], [1.0, -1.0, 1.0])


def test_multidimensional_box_observations_are_flattened(tiny_kwargs):
    model = Dreamer("MlpPolicy", SpaceEnv(spaces.Discrete(2), obs_shape=(2, 3)), **tiny_kwargs)
    world_model = model.policy.world_model
    # the encoder reads the 6 numbers of each (2, 3) observation, and the decoder predicts 6
    assert world_model.encoder.mlp.hidden[0].linear.in_features == 6
    assert world_model.decoder.vector_sizes == [6]
    model.learn(40)
    assert model._n_updates > 0
    actions, _ = model.predict(np.zeros((4, 2, 3), np.float32))
    assert actions.shape == (4,)


@pytest.mark.parametrize(
    "space",
    [
        spaces.Tuple((spaces.Discrete(2), spaces.Discrete(2))),
        spaces.Box(-np.inf, np.inf, (2,), np.float32),
        spaces.MultiBinary((2, 3)),
        spaces.MultiDiscrete([[2, 3], [2, 2]]),
    ],
)
def test_unsupported_action_spaces_raise(space, tiny_kwargs):
    with pytest.raises((TypeError, ValueError), match="action space"):
        Dreamer("MlpPolicy", SpaceEnv(space), **tiny_kwargs)


@pytest.mark.parametrize(
    "space", [spaces.Discrete(16), spaces.Text(8), spaces.Sequence(spaces.Box(0, 1, (2,))), spaces.MultiBinary(3)]
)
def test_unsupported_observation_space_raises(space, tiny_kwargs):
    """Named by Dreamer before SB3 wraps the env (``Text`` and ``Sequence`` broke its VecEnv first)."""
    with pytest.raises(TypeError, match="Dreamer does not support the observation space"):
        Dreamer("MlpPolicy", SpaceEnv(spaces.Discrete(2), observation_space=space), **tiny_kwargs)


def test_dict_observations_of_non_box_entries_raise(tiny_kwargs):
    space = spaces.Dict({"vector": spaces.Box(-1.0, 1.0, (2,), np.float32), "mode": spaces.Discrete(3)})
    with pytest.raises(TypeError, match="Dict observation spaces of Box entries only; 'mode'"):
        Dreamer("MultiInputPolicy", SpaceEnv(spaces.Discrete(2), observation_space=space), **tiny_kwargs)


def test_a_replay_buffer_class_dreamer_cannot_sample_raises(tiny_kwargs):
    from stable_baselines3.common.buffers import ReplayBuffer

    with pytest.raises(TypeError, match="Dreamer needs a SequenceReplayBuffer, got ReplayBuffer"):
        Dreamer("MlpPolicy", CueEnv(), replay_buffer_class=ReplayBuffer, **tiny_kwargs)


@pytest.mark.parametrize(
    "space",
    [
        spaces.Box(0, 1, (4,)),
        spaces.Box(0, 255, (84, 84), np.uint8),  # grayscale without a channel axis
        spaces.Box(0.0, 1.0, (3, 16, 16), np.float32),  # float image
    ],
)
def test_cnn_policy_without_an_image_raises_as_in_sb3(space, tiny_kwargs):
    with pytest.raises(ValueError, match="CnnPolicy needs image observations"):
        Dreamer("CnnPolicy", SpaceEnv(spaces.Discrete(2), observation_space=space), **tiny_kwargs)
    Dreamer("MlpPolicy", SpaceEnv(spaces.Discrete(2), observation_space=space), **tiny_kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(sequence_length=-1), "sequence_length"),
        (dict(imagination_horizon=0), "horizon"),
        (dict(buffer_size=4), "sequence_length"),
        (dict(gamma=1.5), "gamma"),
        (dict(model_size="huge"), "model_size"),
        (dict(precision="fp8"), "precision"),
        (dict(hyperparams={"not_a_field": 1}), "not_a_field"),
        (dict(hyperparams={"decoder_scale": -1.0}), "decoder_scale"),
        (dict(hyperparams={"model_grad_clip": -5.0}), "model_grad_clip"),
        (dict(hyperparams={"actor_critic_grad_clip": 0.0}), "actor_critic_grad_clip"),
        (dict(hyperparams={"return_norm_limit": 0.0}), "return_norm_limit"),
        (dict(version="v1", hyperparams={"actor_grad_continuous": "reinforce"}), "tanh_normal"),
        (dict(hyperparams={"actor_dist": "tanh_normal", "actor_grad_continuous": "both"}), "tanh_normal"),
        (dict(ent_coef="auto"), "ent_coef must be a real number"),
        (dict(gamma="0.99"), "gamma must be a real number"),
        (dict(actor_learning_rate=float("nan")), "actor_lr must be finite"),
        (dict(hyperparams={"free_bits": float("inf")}), "free_bits must be finite"),
        (dict(hyperparams={"free_bits": True}), "free_bits must be a real number"),
        (dict(hyperparams={"activation": "relu6"}), "activation must be one of"),
        (dict(hyperparams={"latent": "beta"}), "latent must be one of"),
        (dict(hyperparams={"gru": "lstm"}), "gru must be one of"),
        (dict(hyperparams={"heads": "mse"}), "heads must be one of"),
        (dict(hyperparams={"continue_estimate": "mean"}), "continue_estimate must be one of"),
        (dict(hyperparams={"actor_grad_discrete": "ppo"}), "actor_grad_discrete must be one of"),
        (dict(hyperparams={"actor_dist": "beta"}), "actor_dist must be one of"),
        (dict(hyperparams={"layer_norm": "False"}), "layer_norm must be a bool"),  # YAML's quoted flag
        (dict(hyperparams={"deter_size": 0}), "deter_size must be a positive integer"),
        (dict(hyperparams={"slow_critic_interval": 2.5}), "slow_critic_interval must be a positive integer"),
        (dict(hyperparams={"layers": -1}), "layers must be a non-negative integer"),
        (dict(hyperparams={"classes": 1}), "classes must be an integer >= 2"),
        (dict(hyperparams={"reward_bins": 1}), "reward_bins must be an integer >= 2"),
        (dict(hyperparams={"unimix": 1.0}), r"unimix must lie in \[0, 1\)"),
        (dict(hyperparams={"return_lambda": 1.5}), r"return_lambda must lie in \[0, 1\]"),
        (dict(actor_learning_rate=0.0), "actor_lr must be positive"),
        (dict(hyperparams={"model_eps": -1e-8}), "model_eps must be positive"),
        (dict(hyperparams={"ent_coef": -0.1}), "ent_coef must be non-negative"),
        (dict(hyperparams={"actor_min_std": 2.0, "actor_max_std": 1.0}), "actor_min_std <= actor_max_std"),
        (dict(hyperparams={"return_norm_low": 95.0, "return_norm_high": 5.0}), "return_norm_low < return_norm_high"),
        (dict(learning_starts=-1), "learning_starts must be a non-negative integer"),
        (dict(video_log_interval=-5), "video_log_interval must be a non-negative integer"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, match, tiny_kwargs):
    with pytest.raises((ValueError, TypeError), match=match):
        Dreamer("MlpPolicy", CueEnv(), **{**tiny_kwargs, **kwargs})


def test_gradient_clipping_caps_the_norm_each_optimizer_applies(tiny_kwargs):
    # below every part's gradient norm in this tiny model (the early actor's is about 5e-5), and
    # different for the world model and the actor-critic, so that swapped settings fail
    clips = {"model_grad_clip": 1e-7, "actor_critic_grad_clip": 3e-7}
    model = Dreamer("MlpPolicy", CueEnv(), hyperparams=clips, **tiny_kwargs)
    model.learn(32)
    policy = model.policy
    applied_norms = {}

    def record_norm(optimizer, args, kwargs) -> None:
        grads = [param.grad for group in optimizer.param_groups for param in group["params"] if param.grad is not None]
        applied_norms[optimizer] = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))

    clip_of = {
        policy.world_model_optimizer: clips["model_grad_clip"],
        policy.actor_optimizer: clips["actor_critic_grad_clip"],
        policy.critic_optimizer: clips["actor_critic_grad_clip"],
    }
    for optimizer in clip_of:
        optimizer.register_step_pre_hook(record_norm)
    metrics, applied = policy.train_step(model.replay_buffer.sample(4))
    assert all(applied) and set(applied_norms) == set(clip_of)
    for name in ("world_model_grad_norm", "actor_grad_norm", "critic_grad_norm"):
        assert metrics[name] > 10 * max(clips.values()), name  # the reported norm is the one before clipping
    for optimizer, clip in clip_of.items():
        assert clip / 2 < applied_norms[optimizer] <= clip * (1 + 1e-4)


def test_a_learning_rate_schedule_drives_the_world_model_rate_only(tiny_kwargs):
    """As in SB3, a schedule of the remaining progress sets the (world-model) optimiser's rate at
    every training round; the actor's and critic's rates are their own."""
    model = Dreamer("MlpPolicy", CueEnv(), learning_rate=lambda progress: 1e-3 * progress, **tiny_kwargs)
    rates = []
    train = model.train

    def recording_train(*args, **kwargs) -> None:
        train(*args, **kwargs)
        rates.append(model.policy.world_model_optimizer.param_groups[0]["lr"])

    model.train = recording_train
    model.learn(64)
    assert len(rates) > 3 and rates == sorted(rates, reverse=True) and rates[0] > rates[-1]
    assert rates[-1] == pytest.approx(1e-3 * model._current_progress_remaining, abs=1e-3 / 64)
    assert model.policy.actor_optimizer.param_groups[0]["lr"] == model.dreamer_config.actor_lr
    assert model.policy.critic_optimizer.param_groups[0]["lr"] == model.dreamer_config.critic_lr


def test_numpy_integers_are_accepted_as_counts(tiny_kwargs):
    counts = {"learning_starts": np.int64(8), "gradient_steps": np.int64(2), "video_log_interval": np.int64(0)}
    model = Dreamer("MlpPolicy", CueEnv(), **{**tiny_kwargs, **counts})
    model.learn(16)
    assert model._n_updates > 0


def test_action_noise_is_refused_rather_than_ignored(tmp_path, tiny_kwargs):
    from stable_baselines3.common.noise import NormalActionNoise

    model = Dreamer("MlpPolicy", CueEnv(action_type="continuous"), **tiny_kwargs)
    model.save(tmp_path / "m")
    noisy = Dreamer.load(tmp_path / "m", env=CueEnv(action_type="continuous"), action_noise=NormalActionNoise(0.0, 0.1))
    with pytest.raises(ValueError, match="action_noise"):
        noisy.learn(8)


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_gamma_zero_trains_actor_and_critic(version, tiny_kwargs):
    """With gamma 0 only the first imagined step is weighted; the weights must stay finite (they
    were 0/0, and every actor and critic update was skipped as non-finite)."""
    model = Dreamer("MlpPolicy", CueEnv(), version=version, gamma=0.0, **tiny_kwargs)
    networks = (model.policy.actor_critic.actor, model.policy.actor_critic.critic)
    before = [[parameter.detach().clone() for parameter in network.parameters()] for network in networks]
    model.learn(32)
    assert model._n_updates > 0 and model._n_updates_skipped == 0
    for network, weights in zip(networks, before):
        assert any(not torch.equal(old, new) for old, new in zip(weights, network.parameters())), network


def test_policy_alone_saves_and_loads(tmp_path, tiny_kwargs):
    model = Dreamer("MlpPolicy", CueEnv(), **tiny_kwargs)
    model.policy.save(tmp_path / "policy.pth")
    policy = type(model.policy).load(tmp_path / "policy.pth")
    saved_state, loaded_state = model.policy.state_dict(), policy.state_dict()
    assert loaded_state.keys() == saved_state.keys()
    for name, saved in saved_state.items():
        torch.testing.assert_close(loaded_state[name], saved, rtol=0, atol=0, msg=name)
    obs = np.stack([model.observation_space.sample() for _ in range(3)])
    (action, state), (expected_action, expected_state) = (
        p.predict(obs, deterministic=True) for p in (policy, model.policy)
    )
    np.testing.assert_array_equal(action, expected_action)
    for part, expected_part in zip(state, expected_state):
        np.testing.assert_array_equal(part, expected_part)


def test_save_load_gives_identical_predictions(tmp_path, tiny_kwargs):
    model = Dreamer("MlpPolicy", CueEnv(), **tiny_kwargs)
    model.learn(64)
    obs = np.stack([model.observation_space.sample() for _ in range(3)])
    model.save(tmp_path / "model")
    loaded = Dreamer.load(tmp_path / "model")
    assert_same_predictions(model, loaded, obs)
    assert_same_policy_state(model.policy, loaded.policy)
    assert loaded.dreamer_config == model.dreamer_config


def test_terminal_fraction_reaches_the_buffer_and_survives_save_load(tmp_path, tiny_kwargs):
    env = SpaceEnv(spaces.Discrete(2))  # terminates every 20 steps
    model = Dreamer("MlpPolicy", env, replay_buffer_kwargs={"terminal_fraction": 0.5}, **tiny_kwargs)
    model.learn(64)
    assert model.replay_buffer.terminal_fraction == 0.5
    assert model.replay_buffer.sample(4).is_terminal[-1, 2:].all()
    model.save(tmp_path / "model")
    loaded = Dreamer.load(tmp_path / "model", env=env)
    assert loaded.replay_buffer.terminal_fraction == 0.5


def test_episode_start_resets_state(tiny_kwargs):
    model = Dreamer("MlpPolicy", CueEnv(), **tiny_kwargs)
    model.learn(64)
    obs = np.stack([model.observation_space.sample() for _ in range(2)])
    torch.manual_seed(1)
    _, state = model.predict(obs, None, None, deterministic=True)
    for _ in range(3):
        _, state = model.predict(obs, state, np.zeros(2, bool), deterministic=True)
    _, fresh = model.predict(obs, None, None, deterministic=True)
    _, reset = model.predict(obs, state, np.array([True, False]), deterministic=True)
    np.testing.assert_array_equal(reset[0][0], fresh[0][0])
    np.testing.assert_array_equal(reset[1][0], fresh[1][0])
    assert not np.array_equal(reset[0][1], fresh[0][1])


def test_predict_batches_and_state_checks(tiny_kwargs):
    model = Dreamer("MlpPolicy", CueEnv(), **tiny_kwargs)
    one = model.observation_space.sample()
    action, state = model.predict(one)
    assert np.shape(action) == () and state[0].shape[0] == 1
    batch = np.stack([model.observation_space.sample() for _ in range(10)])
    actions, state10 = model.predict(batch)
    assert actions.shape == (10,) and state10[0].shape[0] == 10
    with pytest.raises(ValueError, match="state shapes"):
        model.predict(batch, state)
    with pytest.raises(ValueError, match="episode_start"):
        model.predict(batch, state10, np.zeros(3, bool))
    with pytest.raises(ValueError, match="Unexpected observation shape"):
        model.predict(np.zeros((10, 5), np.float32))
    with pytest.raises(TypeError, match="numeric"):
        model.predict(np.array([["a", "b"]]))
    with pytest.raises(TypeError, match="state must be the"):
        model.predict(batch, state10[:2])
    with pytest.raises(TypeError, match="state entries must be numeric"):
        model.predict(batch, (state10[0].astype(str), *state10[1:]))
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="NaN or infinite"):
            model.predict(np.where(np.arange(batch.shape[1]) == 0, bad, batch).astype(np.float32))
        with pytest.raises(ValueError, match="state holds NaN"):
            model.predict(batch, (np.full_like(state10[0], bad), *state10[1:]))


def test_predict_takes_a_state_of_any_real_dtype_and_a_list(tiny_kwargs):
    """As RecurrentPPO does: a float64 state (e.g. built with ``np.zeros``) failed deep in torch."""
    model = Dreamer("MlpPolicy", CueEnv(), **tiny_kwargs)
    batch = np.stack([model.observation_space.sample() for _ in range(3)])
    _, state = model.predict(batch)
    expected = model.predict(batch, state, deterministic=True)
    for other in ([part.astype(np.float64) for part in state], tuple(part.tolist() for part in state)):
        action, next_state = model.predict(batch, other, deterministic=True)
        np.testing.assert_array_equal(action, expected[0])
        for part, expected_part in zip(next_state, expected[1]):
            np.testing.assert_array_equal(part, expected_part)


def test_predict_is_pure_for_collection_state(tiny_kwargs):
    model = Dreamer("MlpPolicy", CueEnv(), **tiny_kwargs)
    model.learn(32)
    before = tuple(part.copy() for part in model._collection_state)
    model.predict(model.observation_space.sample())
    for old, new in zip(before, model._collection_state):
        np.testing.assert_array_equal(old, new)


def test_callbacks_progress_bar_tensorboard_and_evaluate(tmp_path, tiny_kwargs):
    callbacks = [
        EvalCallback(CueEnv(), eval_freq=40, n_eval_episodes=2, best_model_save_path=str(tmp_path)),
        CheckpointCallback(save_freq=50, save_path=str(tmp_path / "ckpt"), save_replay_buffer=True),
    ]
    model = Dreamer("MlpPolicy", CueEnv(), tensorboard_log=str(tmp_path / "tb"), verbose=0, **tiny_kwargs)
    model.learn(100, callback=callbacks, progress_bar=True, log_interval=1)
    assert (tmp_path / "best_model.zip").exists()
    files = os.listdir(tmp_path / "ckpt")
    assert any(name.endswith(".zip") for name in files) and any("replay_buffer" in name for name in files)
    runs = os.listdir(tmp_path / "tb")
    assert runs and runs[0].startswith("Dreamer")
    for key in (
        "train/world_model_loss",
        "train/actor_loss",
        "train/critic_loss",
        "train/kl",
        "train/return_scale",
        "train/entropy",
        "train/updates_per_second",
    ):
        assert key in model.logger.name_to_value, key
    returns, lengths = evaluate_policy(model, CueEnv(), n_eval_episodes=3, return_episode_rewards=True)
    assert lengths == [10, 10, 10] and all(float(r).is_integer() and r % 2 == 0 for r in returns)  # 10 x ±1


def test_a_callback_returning_false_stops_learn(tiny_kwargs):
    """The first evaluation is above the threshold (a return is at least -10), so the callback
    stops training there."""
    stop = StopTrainingOnRewardThreshold(reward_threshold=-100)
    callback = EvalCallback(CueEnv(), eval_freq=20, n_eval_episodes=1, callback_on_new_best=stop)
    model = Dreamer("MlpPolicy", CueEnv(), **tiny_kwargs)
    model.learn(200, callback=callback)
    assert model.num_timesteps == 20


class CounterEnv(gym.Env):
    """Observation ``t``, the step count of the episode; episodes of 1000 steps."""

    observation_space = spaces.Box(-1e6, 1e6, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self._t += 1
        return np.array([self._t], np.float32), 0.0, False, self._t >= 1000, {}


class StopAt(BaseCallback):
    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps

    def _on_step(self) -> bool:
        return self.num_timesteps < self.steps


def test_learn_after_a_callback_stop_starts_new_episodes(tiny_kwargs):
    """SB3 stops after ``env.step`` and before storing that step; the next ``learn`` must not splice
    the step after it onto the stream (observations 0..9, then 11: a lost step inside an episode)."""
    model = Dreamer("MlpPolicy", CounterEnv(), **tiny_kwargs)
    model.learn(100, callback=StopAt(10))
    assert model.num_timesteps == 10
    model.learn(10, reset_num_timesteps=False)
    buffer = model.replay_buffer
    stored = buffer.observations[: buffer.filled[0], 0, 0]  # (N,)
    is_first = buffer.is_first[: buffer.filled[0], 0]
    np.testing.assert_array_equal(stored[:10], np.arange(10))  # the 10th step was not stored
    np.testing.assert_array_equal(stored[10:], np.arange(len(stored) - 10))  # a reset env, a new episode
    np.testing.assert_array_equal(np.flatnonzero(is_first), [0, 10])


def test_stochastic_predict_samples_the_actor_without_the_collection_noise(tiny_kwargs):
    """V1 explores with a random action 30% of the time while collecting; ``predict`` samples the
    actor alone, as SB3's TD3 leaves out its action noise."""
    model = Dreamer("MlpPolicy", CueEnv(), version="v1", **tiny_kwargs)
    assert model.policy.config.explore_noise == 0.3
    with torch.no_grad():
        out = model.policy.actor_critic.actor.net.out
        out.weight.zero_()
        out.bias.copy_(torch.tensor([-20.0, 20.0]))  # action 1 with probability ~1
    obs = np.stack([model.observation_space.sample() for _ in range(2000)])
    actions, _ = model.predict(obs, deterministic=False)
    assert (actions == 1).all()
    model.policy.set_training_mode(False)
    model._last_obs, model._last_episode_starts = obs, np.ones(len(obs), dtype=bool)
    collected, _ = model._sample_action(learning_starts=0, n_envs=len(obs))
    assert 0.1 < (collected == 0).mean() < 0.2  # 0.3 x one of two random classes


def test_policy_kwargs_config_raises(tiny_kwargs):
    from sb3_dreamer.presets import make_config

    with pytest.raises(ValueError, match="policy_kwargs holds 'config'"):
        Dreamer("MlpPolicy", CueEnv(), policy_kwargs={"config": make_config("v2", "tiny")}, **tiny_kwargs)


def test_video_log_interval_without_images_raises_at_construction(tiny_kwargs):
    with pytest.raises(ValueError, match="video_log_interval=5 needs image observations"):
        Dreamer("MlpPolicy", CueEnv(), video_log_interval=5, **tiny_kwargs)


def test_replay_buffer_kwargs_are_copied_not_changed(tiny_kwargs):
    """A dict reused across models (a seed loop) keeps what the caller put in it; each model's
    buffer gets its own seed and sequence length."""
    shared = {"terminal_fraction": 0.25}
    first = Dreamer("MlpPolicy", CueEnv(), replay_buffer_kwargs=shared, **{**tiny_kwargs, "seed": 0})
    second = Dreamer(
        "MlpPolicy", CueEnv(), replay_buffer_kwargs=shared, **{**tiny_kwargs, "seed": 1, "sequence_length": 16}
    )
    assert shared == {"terminal_fraction": 0.25}
    assert (first.replay_buffer.sequence_length, second.replay_buffer.sequence_length) == (8, 16)
    assert first.replay_buffer.rng.random() != second.replay_buffer.rng.random()
    with pytest.raises(ValueError, match="sequence_length"):
        Dreamer("MlpPolicy", CueEnv(), replay_buffer_kwargs={"sequence_length": 16}, **tiny_kwargs)


def test_policy_kwargs_are_kept_as_given_so_a_dict_is_reusable_and_load_compares_equal(tmp_path, tiny_kwargs):
    """SB3 keeps the caller's policy_kwargs and load refuses ones that differ from the saved: the
    configuration Dreamer adds for its policy must not enter them."""
    shared = {"normalize_images": False}
    model = Dreamer("MlpPolicy", CueEnv(), policy_kwargs=shared, **tiny_kwargs)
    Dreamer("MlpPolicy", CueEnv(), policy_kwargs=shared, **tiny_kwargs)  # a seed loop reuses the dict
    assert shared == {"normalize_images": False} and model.policy_kwargs == shared
    model.save(tmp_path / "m")
    loaded = Dreamer.load(tmp_path / "m", env=CueEnv(), policy_kwargs={"normalize_images": False})
    assert loaded.policy.config == model.policy.config
    with pytest.raises(ValueError, match="policy kwargs"):  # SB3's own check still applies
        Dreamer.load(tmp_path / "m", env=CueEnv(), policy_kwargs={"normalize_images": True})


def test_load_checks_replay_buffer_kwargs_and_load_replay_buffer_adopts_their_terminal_fraction(tmp_path, tiny_kwargs):
    env = SpaceEnv(spaces.Discrete(2))  # terminates every 20 steps
    model = Dreamer("MlpPolicy", env, **tiny_kwargs)
    model.learn(64)
    model.save(tmp_path / "m")
    model.save_replay_buffer(tmp_path / "buffer")
    with pytest.raises(ValueError, match="replay_buffer_kwargs holds sequence_length=16"):
        Dreamer.load(tmp_path / "m", env=env, replay_buffer_kwargs={"sequence_length": 16})
    given = {"terminal_fraction": 0.5}
    loaded = Dreamer.load(tmp_path / "m", env=env, replay_buffer_kwargs=given)
    assert given == {"terminal_fraction": 0.5}
    loaded.load_replay_buffer(tmp_path / "buffer")
    assert loaded.replay_buffer.terminal_fraction == 0.5
    assert loaded.replay_buffer.sample(4).is_terminal[-1, 2:].all()


@pytest.mark.parametrize("train_freq", [0, -2, (0, "step"), 1.5])
def test_train_freq_below_one_raises(train_freq, tiny_kwargs):
    with pytest.raises(ValueError, match="train_freq must be a positive integer"):
        Dreamer("MlpPolicy", CueEnv(), **{**tiny_kwargs, "train_freq": train_freq})


def test_custom_objects_on_load_reach_the_buffer_and_the_update(tmp_path, tiny_kwargs):
    model = Dreamer("MlpPolicy", CueEnv(), **tiny_kwargs)
    model.save(tmp_path / "m")
    loaded = Dreamer.load(tmp_path / "m", env=CueEnv(), custom_objects={"sequence_length": 4, "gamma": 0.5})
    assert loaded.replay_buffer.sequence_length == 4
    assert loaded.policy.config.gamma == 0.5 and loaded.policy.actor_critic.config.gamma == 0.5
    loaded.learn(32)


def test_load_keywords_change_training_settings_as_in_sb3(tmp_path, tiny_kwargs):
    """``SAC.load(path, learning_rate=...)`` trains on with the new rate; so must Dreamer's
    configuration keywords, also in the optimizers whose saved states carry the old rates."""
    model = Dreamer("MlpPolicy", CueEnv(), **tiny_kwargs)
    model.learn(40)
    model.save(tmp_path / "m")
    # the named keywords win over hyperparams, as in the constructor; None leaves a setting as saved
    loaded = Dreamer.load(
        tmp_path / "m", env=CueEnv(), hyperparams={"actor_lr": 1e-5, "model_lr": 2e-4, "gamma": 0.9, "ent_coef": 0.1},
        critic_learning_rate=3e-4, ent_coef=0.05, imagination_horizon=7, gamma=0.95, return_lambda=None,
    )  # fmt: skip
    config = loaded.policy.actor_critic.config
    assert (config.actor_lr, config.critic_lr, config.ent_coef, config.horizon) == (1e-5, 3e-4, 0.05, 7)
    assert config.return_lambda == model.dreamer_config.return_lambda
    assert loaded.dreamer_config == loaded.policy.config and loaded.gamma == config.gamma == 0.95
    assert loaded.policy.actor_optimizer.param_groups[0]["lr"] == 1e-5
    assert loaded.policy.critic_optimizer.param_groups[0]["lr"] == 3e-4
    for saved, restored in zip(model.policy.parameters(), loaded.policy.parameters(), strict=True):
        torch.testing.assert_close(saved, restored, rtol=0, atol=0)
    loaded.learn(8, reset_num_timesteps=False)
    assert loaded.policy.world_model_optimizer.param_groups[0]["lr"] == 2e-4
    loaded.save(tmp_path / "changed")
    again = Dreamer.load(tmp_path / "changed")
    assert again.dreamer_config.actor_lr == 1e-5 and again.policy.actor_optimizer.param_groups[0]["lr"] == 1e-5
    # without keywords the saved settings stay
    plain = Dreamer.load(tmp_path / "m")
    assert plain.dreamer_config == model.dreamer_config
    assert plain.policy.actor_optimizer.param_groups[0]["lr"] == model.dreamer_config.actor_lr
    # as in the constructor, learning_rate=None means the saved rate (SB3 would set None)
    kept = Dreamer.load(tmp_path / "m", env=CueEnv(), learning_rate=None)
    assert kept.dreamer_config == model.dreamer_config and kept.learning_rate == model.learning_rate
    kept.learn(8, reset_num_timesteps=False)
    with pytest.raises(ValueError, match="model_size='tiny'; load cannot change it to 'S'"):
        Dreamer.load(tmp_path / "m", model_size="S")
    with pytest.raises(ValueError, match="load cannot change it to 'v1'"):
        Dreamer.load(tmp_path / "m", version="v1")
    assert Dreamer.load(tmp_path / "m", version="v3", model_size="tiny").dreamer_config == model.dreamer_config
    # a size argument that gives the same networks is the same size (V3's paper sizes are "S")
    assert _same_sizes("v3", None, "S") and not _same_sizes("v3", "tiny", "S") and not _same_sizes("v3", "?", "S")


def test_a_constant_schedule_is_a_constant_learning_rate(tmp_path, tiny_kwargs):
    """rl_zoo3 hands every number over as SB3's ConstantSchedule: it must set the world model's
    rate in the configuration as the number does, at construction and at load (the zoo's -i)."""
    from stable_baselines3.common.utils import ConstantSchedule

    model = Dreamer("MlpPolicy", CueEnv(), learning_rate=ConstantSchedule(1e-5), **tiny_kwargs)
    assert model.dreamer_config.model_lr == 1e-5
    model.learn(24)
    assert model.policy.world_model_optimizer.param_groups[0]["lr"] == 1e-5
    model.save(tmp_path / "m")
    loaded = Dreamer.load(tmp_path / "m", env=CueEnv(), learning_rate=ConstantSchedule(2e-5))
    assert loaded.dreamer_config.model_lr == 2e-5
    loaded.learn(8, reset_num_timesteps=False)
    assert loaded.policy.world_model_optimizer.param_groups[0]["lr"] == 2e-5


def test_load_with_a_seed_reseeds_and_without_continues_the_saved_streams(tmp_path, tiny_kwargs):
    model = Dreamer("MlpPolicy", CueEnv(), **tiny_kwargs)
    model.learn(24)
    model.save(tmp_path / "m")

    def draws(loaded: Dreamer) -> tuple:
        return torch.rand(1).item(), np.random.rand(), loaded.action_space.sample(), loaded.replay_buffer.rng.random()

    saved_streams = draws(model)  # what the saved streams draw next
    first, second = (draws(Dreamer.load(tmp_path / "m", env=CueEnv(), seed=seed)) for seed in (1, 2))
    assert all(a != b for a, b in zip(first[:2], second[:2]))
    assert first == draws(Dreamer.load(tmp_path / "m", env=CueEnv(), seed=1))
    torch.manual_seed(123), np.random.seed(123)  # load must not depend on the streams' state before it
    assert draws(Dreamer.load(tmp_path / "m", env=CueEnv()))[:3] == saved_streams[:3]


def test_load_of_an_unseeded_model_leaves_the_process_streams_alone(tmp_path, tiny_kwargs):
    """As in SB3: only a seeded model's streams are worth continuing (an unseeded run cannot be
    repeated anyway); rewinding them on every load made a user's draws after each load repeat."""
    model = Dreamer("MlpPolicy", CueEnv(), **{**tiny_kwargs, "seed": None})
    model.learn(24)
    model.save(tmp_path / "m")
    torch.manual_seed(5), np.random.seed(5)
    after_loads = []
    for _ in range(2):
        Dreamer.load(tmp_path / "m", env=CueEnv())
        after_loads.append((torch.rand(1).item(), np.random.rand()))
    assert after_loads[0][0] != after_loads[1][0] and after_loads[0][1] != after_loads[1][1]
    np.random.seed(5)  # numpy's stream is not drawn from by load: it goes on as if there were none
    assert after_loads[0][1] == np.random.rand()


def test_load_keywords_are_checked_like_the_constructors(tmp_path, tiny_kwargs):
    Dreamer("MlpPolicy", CueEnv(), **tiny_kwargs).save(tmp_path / "m")
    for keyword, match in [
        (dict(batch_size=-3), "batch_size"),
        (dict(gradient_steps=-5), "gradient_steps"),
        (dict(learning_starts=-1), "learning_starts"),
        (dict(hyperparams={"version": "v1"}), "hyperparams holds version='v1'; a loaded model keeps its version"),
    ]:
        with pytest.raises(ValueError, match=match):
            Dreamer.load(tmp_path / "m", env=CueEnv(), **keyword)


@pytest.mark.parametrize("algorithm", ["SAC", "PPO"])
def test_load_of_another_algorithms_zip_names_the_problem(algorithm, tmp_path):
    import stable_baselines3

    algorithm_class = getattr(stable_baselines3, algorithm)
    algorithm_class("MlpPolicy", "Pendulum-v1", **({"learning_starts": 0} if algorithm == "SAC" else {})).save(
        tmp_path / "other"
    )
    with pytest.raises(TypeError, match="another algorithm"):
        Dreamer.load(tmp_path / "other", env=gym.make("Pendulum-v1"))


def test_set_random_seed_reseeds_the_replay_sampler(tiny_kwargs):
    samplers = []
    for _ in range(2):
        model = Dreamer("MlpPolicy", CueEnv(), **{**tiny_kwargs, "seed": None})
        model.set_random_seed(3)
        samplers.append(model.replay_buffer.rng.integers(1 << 30, size=4))
    np.testing.assert_array_equal(*samplers)


def test_continuous_actions_in_the_state_are_the_executed_ones(tiny_kwargs):
    """V3's Normal actor samples outside [-1, 1]; the env gets the clipped action, the buffer stores
    it, so the state's previous action, which the RSSM reads next step, must be that one too."""
    model = Dreamer("MlpPolicy", CueEnv(action_type="continuous"), **{**tiny_kwargs, "learning_starts": 0})
    model.learn(48)
    assert np.abs(model._collection_state[2]).max() <= 1.0
    obs = np.stack([model.observation_space.sample() for _ in range(64)])
    state = None
    for _ in range(3):
        action, state = model.predict(obs, state)
        np.testing.assert_allclose(state[2], model.policy.scale_action(action), rtol=0, atol=1e-6)


def test_load_replay_buffer_of_other_n_envs_raises(tmp_path, tiny_kwargs):
    model = Dreamer("MlpPolicy", make_vec_env(CueEnv, n_envs=2, seed=0), **tiny_kwargs)
    model.learn(32)
    model.save_replay_buffer(tmp_path / "buffer")
    other = Dreamer("MlpPolicy", make_vec_env(CueEnv, n_envs=3, seed=0), **tiny_kwargs)
    kept = other.replay_buffer
    with pytest.raises(ValueError, match="2 env streams but the model has 3 envs"):
        other.load_replay_buffer(tmp_path / "buffer")
    assert other.replay_buffer is kept


def test_load_replay_buffer_takes_the_models_sequence_length_and_starts_new_episodes(tmp_path, tiny_kwargs):
    model = Dreamer("MlpPolicy", CueEnv(), **tiny_kwargs)
    model.learn(40)
    model.save(tmp_path / "m")
    model.save_replay_buffer(tmp_path / "buffer")
    loaded = Dreamer.load(tmp_path / "m", env=CueEnv(), custom_objects={"sequence_length": 4})
    loaded.load_replay_buffer(tmp_path / "buffer")
    assert loaded.replay_buffer.sequence_length == 4
    assert loaded.replay_buffer.sample(2).rewards.shape[0] == 4
    assert loaded.replay_buffer._needs_first.all()


def test_load_replay_buffer_rejects_what_dreamer_cannot_sample(tmp_path, tiny_kwargs):
    from stable_baselines3.common.buffers import ReplayBuffer
    from stable_baselines3.common.save_util import save_to_pkl

    model = Dreamer("MlpPolicy", CueEnv(), **{**tiny_kwargs, "buffer_size": 6, "sequence_length": 6})
    model.learn(8)
    model.save_replay_buffer(tmp_path / "short")
    save_to_pkl(tmp_path / "plain", ReplayBuffer(10, model.observation_space, model.action_space))
    other = Dreamer("MlpPolicy", CueEnv(), **tiny_kwargs)
    kept = other.replay_buffer
    with pytest.raises(ValueError, match="hold 6 steps each, fewer than the model's sequence_length 8"):
        other.load_replay_buffer(tmp_path / "short")
    with pytest.raises(TypeError, match="the file holds a ReplayBuffer"):
        other.load_replay_buffer(tmp_path / "plain")
    save_to_pkl(tmp_path / "not_a_buffer", {"rows": []})
    with pytest.raises(TypeError, match="the file holds a dict"):
        other.load_replay_buffer(tmp_path / "not_a_buffer")
    continuous = Dreamer("MlpPolicy", CueEnv(action_type="continuous"), **tiny_kwargs)
    continuous.learn(16)
    continuous.save_replay_buffer(tmp_path / "continuous")
    with pytest.raises(ValueError, match="replay buffer was saved for observations"):
        other.load_replay_buffer(tmp_path / "continuous")
    assert other.replay_buffer is kept


def test_load_with_other_n_envs_and_continue(tmp_path, tiny_kwargs):
    model = Dreamer("MlpPolicy", make_vec_env(CueEnv, n_envs=2, seed=0), **tiny_kwargs)
    model.learn(64)
    model.save(tmp_path / "m")
    model.save_replay_buffer(tmp_path / "buffer")
    env3 = make_vec_env(CueEnv, n_envs=3, seed=1)
    loaded = Dreamer.load(tmp_path / "m", env=env3)
    assert loaded.n_envs == 3
    loaded.learn(48, reset_num_timesteps=False)
    assert loaded.num_timesteps >= 64 + 48
    again = Dreamer.load(tmp_path / "m", env=make_vec_env(CueEnv, n_envs=2, seed=2))
    again.load_replay_buffer(tmp_path / "buffer")
    assert again.replay_buffer.size() == model.replay_buffer.size()
    again.learn(16, reset_num_timesteps=False)


def test_set_parameters_copies_weights(tiny_kwargs):
    source = Dreamer("MlpPolicy", CueEnv(), **tiny_kwargs)
    source.learn(48)
    target = Dreamer("MlpPolicy", CueEnv(), **{**tiny_kwargs, "seed": 5})
    target.set_parameters(source.get_parameters())
    assert_same_policy_state(source.policy, target.policy)
    assert_same_predictions(source, target, np.stack([source.observation_space.sample() for _ in range(2)]))


@pytest.mark.parametrize(
    ("train_freq", "gradient_steps", "updates"),
    [
        # SB3's meanings: a round after every (second) episode of 10 steps once 16 steps are stored;
        # -1 updates as often as the round collected env steps
        ((1, "episode"), -1, 5 * 10),  # rounds after episodes 2-6
        ((1, "episode"), 2, 5 * 2),
        ((2, "episode"), 1, 3),  # after episodes 2, 4 and 6
        (4, -1, 11 * 4),  # rounds at steps 20, 24, ..., 60
    ],
)
def test_train_freq_in_episodes_and_gradient_steps_minus_one_as_in_sb3(
    train_freq, gradient_steps, updates, tiny_kwargs
):
    kwargs = {**tiny_kwargs, "learning_starts": 16, "train_freq": train_freq, "gradient_steps": gradient_steps}
    model = Dreamer("MlpPolicy", CueEnv(length=10), **kwargs)
    model.learn(60)
    assert model._n_updates == updates


def test_train_ratio_follows_train_freq_and_gradient_steps(tiny_kwargs):
    model = Dreamer(
        "MlpPolicy", CueEnv(), **{**tiny_kwargs, "learning_starts": 0, "train_freq": 2, "gradient_steps": 3}
    )
    model.learn(40)
    assert model._n_updates == 3 * (40 // 2) - 3 * ((tiny_kwargs["sequence_length"] - 1) // 2)

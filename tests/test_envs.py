"""The Dreamer-standard Atari and dm_control helpers, run inside ``learn`` for a few steps."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest

from sb3_dreamer import Dreamer
from sb3_dreamer.envs import ActionRepeat, make_atari_env, make_dmc_env, make_vec_dreamer_env, wrap_dmc

TINY = dict(
    model_size="tiny",
    batch_size=2,
    sequence_length=4,
    learning_starts=8,
    buffer_size=100,
    train_freq=8,
    precision="fp32",
    seed=0,
)


def test_atari_helper_matches_dreamer_preprocessing():
    pytest.importorskip("ale_py")
    env = make_atari_env("Pong", grayscale=True)
    assert env.observation_space.shape == (64, 64, 1) and env.observation_space.dtype == np.uint8
    assert env.action_space.n == 18  # full action set
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    assert make_atari_env("Pong", grayscale=False).observation_space.shape == (64, 64, 3)
    model = Dreamer(
        "CnnPolicy", make_vec_dreamer_env(functools.partial(make_atari_env, "Pong"), n_envs=2, seed=0), **TINY
    )
    model.learn(16)
    assert model._n_updates > 0
    assert model.replay_buffer.observations.shape[1:] == (2, 1, 64, 64)


@pytest.mark.parametrize("observation", ["pixels", "proprio", "both"])
def test_dmc_helper_runs_inside_learn(observation):
    pytest.importorskip("shimmy")
    env = make_dmc_env("cartpole-balance", observation=observation)
    policy = {"pixels": "CnnPolicy", "proprio": "MlpPolicy", "both": "MultiInputPolicy"}[observation]
    model = Dreamer(policy, env, **TINY)
    model.learn(16)
    assert model._n_updates > 0
    # predict takes the env's own observations directly, not only the VecEnv copies learn and evaluate see
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(action)
    if observation == "pixels":
        assert model.observation_space.shape == (3, 64, 64)
    if observation == "proprio":
        assert model.observation_space.shape == (5,)


def test_dmc_camera_per_domain_as_the_dreamer_authors():
    cameras = {
        task: make_dmc_env(task).unwrapped.render_kwargs["camera_id"] for task in ("quadruped-walk", "cartpole-balance")
    }
    assert cameras == {"quadruped-walk": 2, "cartpole-balance": 0}
    assert make_dmc_env("quadruped-walk", camera=1).unwrapped.render_kwargs["camera_id"] == 1


class CountingEnv(gym.Env):
    """Reward 1 per step, terminates at step ``end``; counts the steps taken."""

    observation_space = gym.spaces.Box(0.0, 10.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, end: int = 3) -> None:
        self.end, self.steps = end, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.steps += 1
        return np.full(1, self.steps, np.float32), 1.0, self.steps >= self.end, False, {}


def test_action_repeat_sums_rewards_and_stops_at_the_episode_end():
    env = ActionRepeat(CountingEnv(end=3), repeat=2)
    env.reset(seed=0)
    obs, reward, terminated, truncated, _ = env.step(0)
    assert (obs[0], reward, terminated, truncated) == (2.0, 2.0, False, False)
    obs, reward, terminated, truncated, _ = env.step(0)  # one step left in the episode
    assert (obs[0], reward, terminated, truncated) == (3.0, 1.0, True, False) and env.unwrapped.steps == 3
    with pytest.raises(ValueError, match="repeat must be >= 1, got 0"):
        ActionRepeat(CountingEnv(), repeat=0)


def test_dmc_wrapper_refuses_an_env_that_does_not_render_at_its_size():
    pytest.importorskip("shimmy")
    pytest.importorskip("dm_control")
    env = gym.make("dm_control/cartpole-balance-v0", render_mode="rgb_array", render_kwargs={"height": 32, "width": 32})
    try:
        with pytest.raises(ValueError, match="render_kwargs height = width = 64"):
            wrap_dmc(env, observation="pixels", size=64)
        with pytest.raises(ValueError, match="observation must be 'pixels', 'proprio' or 'both', got 'rgb'"):
            wrap_dmc(env, observation="rgb", size=32)
    finally:
        env.close()

"""The Dreamer-standard Atari and dm_control helpers, run inside ``learn`` for a few steps."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from sb3_dreamer import Dreamer
from sb3_dreamer.envs import make_atari_env, make_dmc_env, make_vec_dreamer_env

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

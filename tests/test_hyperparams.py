"""The shipped hyperparameter file: every section builds a working Dreamer."""

from __future__ import annotations

import pytest

from sb3_dreamer import Dreamer
from sb3_dreamer.hyperparams import hyperparams_path, load_hyperparams

ENVS = ["CartPole-v1", "Pendulum-v1"]


@pytest.mark.parametrize("env_id", ENVS)
def test_shipped_section_builds_and_trains(env_id):
    kwargs = load_hyperparams(env_id)
    assert kwargs.pop("n_timesteps") > 0
    policy = kwargs.pop("policy")
    kwargs.update(learning_starts=kwargs["sequence_length"], buffer_size=1000)
    model = Dreamer(policy, env_id, seed=0, **kwargs)
    model.learn(kwargs["sequence_length"] + kwargs["train_freq"])
    assert model._n_updates >= 1


def test_unknown_env_falls_back_to_default():
    assert load_hyperparams("NoSuchEnv-v0")["policy"] == "MlpPolicy"
    assert hyperparams_path().name == "dreamer.yml"

"""The shipped hyperparameter file: every section builds a working Dreamer."""

from __future__ import annotations

import importlib

import gymnasium as gym
import numpy as np
import pytest
import yaml

from sb3_dreamer import Dreamer
from sb3_dreamer.hyperparams import ENV_KEYS, has_section, hyperparams_path, load_hyperparams

ENVS = ["CartPole-v1", "Pendulum-v1"]
#: The version every section of each packaged file builds.
ALGO_VERSIONS = {"dreamer": "v3", "dreamer_v2": "v2", "dreamer_v1": "v1"}


@pytest.mark.parametrize("env_id", ENVS)
@pytest.mark.parametrize("algo", ["dreamer", "dreamer_v2", "dreamer_v1"])
def test_shipped_section_builds_and_trains(env_id, algo):
    assert has_section(env_id, algo)
    kwargs = load_hyperparams(env_id, algo=algo)
    assert kwargs.pop("n_timesteps") > 0
    policy = kwargs.pop("policy")
    kwargs.update(learning_starts=kwargs["sequence_length"], buffer_size=1000)
    model = Dreamer(policy, env_id, seed=0, **kwargs)
    assert model.version == ALGO_VERSIONS[algo]
    model.learn(kwargs["sequence_length"] + kwargs["train_freq"])
    assert model._n_updates >= 1


@pytest.mark.parametrize("algo", ["dreamer_v1", "dreamer_v2"])
def test_every_section_of_a_version_file_sets_its_version(algo):
    with open(hyperparams_path(algo), encoding="utf-8") as handle:
        sections = yaml.safe_load(handle)
    assert "default" in sections
    assert {name: section["version"] for name, section in sections.items()} == dict.fromkeys(
        sections, ALGO_VERSIONS[algo]
    )
    assert load_hyperparams("NoSuchEnv-v0", algo=algo)["version"] == ALGO_VERSIONS[algo]


def test_unknown_env_falls_back_to_default():
    assert load_hyperparams("NoSuchEnv-v0")["policy"] == "MlpPolicy"
    assert not has_section("NoSuchEnv-v0")
    assert hyperparams_path().name == "dreamer.yml"
    with pytest.raises(ValueError, match="dreamer_v4"):
        hyperparams_path("dreamer_v4")


def test_env_keys_are_left_out_unless_asked_for():
    assert "env_wrapper" not in load_hyperparams("atari")
    assert load_hyperparams("atari", include_env=True)["env_kwargs"]["frameskip"] == 1


def build_zoo_env(env_id: str, section: dict) -> gym.Env:
    """The env rl_zoo3 builds from a section: ``gym.make(env_id, **env_kwargs)``, then ``env_wrapper``."""
    env = gym.make(env_id, **section.get("env_kwargs", {}))
    for wrapper in section.get("env_wrapper", []):
        ((name, kwargs),) = wrapper.items()
        module, function = name.rsplit(".", 1)
        env = getattr(importlib.import_module(module), function)(env, **kwargs)
    return env


@pytest.mark.parametrize(
    ("section_name", "env_id", "register", "algo"),
    [
        ("dm_control/cartpole-balance-v0", "dm_control/cartpole-balance-v0", "shimmy", "dreamer"),
        ("dm_control/walker-walk-v0", "dm_control/walker-walk-v0", "shimmy", "dreamer"),
        ("dm_control/cartpole-balance-v0", "dm_control/cartpole-balance-v0", "shimmy", "dreamer_v2"),
        ("dm_control/walker-walk-v0", "dm_control/walker-walk-v0", "shimmy", "dreamer_v1"),
        ("atari", "ALE/Pong-v5", "ale_py", "dreamer"),
        ("atari", "ALE/Pong-v5", "ale_py", "dreamer_v2"),
        ("atari", "ALE/Pong-v5", "ale_py", "dreamer_v1"),
    ],
)
def test_zoo_sections_build_the_dreamer_env_and_train(section_name, env_id, register, algo):
    import sb3_dreamer.envs  # noqa: F401  (headless MuJoCo rendering)

    gym.register_envs(pytest.importorskip(register))
    section = load_hyperparams(section_name, include_env=True, algo=algo)
    env = build_zoo_env(env_id, section)
    space = env.observation_space
    if section["policy"] == "CnnPolicy":
        assert space.dtype == np.uint8 and space.shape[:2] == (64, 64)
    else:
        assert space.dtype == np.float32 and len(space.shape) == 1
    observation, _ = env.reset(seed=0)
    assert space.contains(observation)

    kwargs = load_hyperparams(section_name, algo=algo)
    assert not set(ENV_KEYS) & set(kwargs)
    assert kwargs.pop("n_timesteps") > 0
    policy = kwargs.pop("policy")
    # the section's schedule, at the smallest size and batch, so that one update takes a moment
    kwargs.update(model_size="tiny", batch_size=2, learning_starts=kwargs["sequence_length"], buffer_size=1000)
    model = Dreamer(policy, env, seed=0, **kwargs)
    assert model.version == ALGO_VERSIONS[algo]
    model.learn(kwargs["sequence_length"] + kwargs["train_freq"])
    assert model._n_updates >= 1

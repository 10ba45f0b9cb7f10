"""RL Zoo-style hyperparameter files shipped with the package (``dreamer.yml``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

DEFAULT_FILE = "dreamer.yml"

#: Section keys that tell rl_zoo3 how to build the env rather than how to build the agent.
ENV_KEYS = ("env_kwargs", "env_wrapper")


def hyperparams_path() -> Path:
    """Path of the packaged ``dreamer.yml``."""
    return Path(str(resources.files(__package__).joinpath(DEFAULT_FILE)))


def load_hyperparams(env_id: str, path: str | Path | None = None, include_env: bool = False) -> dict[str, Any]:
    """Hyperparameters of ``env_id`` from an RL Zoo-format YAML file (``default`` if absent).

    :param env_id: gymnasium id, or a zoo section name such as ``"atari"``
    :param path: YAML file; ``None`` means the packaged ``dreamer.yml``
    :param include_env: keep the zoo's env-building keys (:data:`ENV_KEYS`); by default they are
        dropped, since the :mod:`sb3_dreamer.envs` factories already build the env that way
    :return: the section as a dict (zoo keys such as ``n_timesteps`` and ``policy`` included)
    """
    with open(path or hyperparams_path(), encoding="utf-8") as handle:
        sections = yaml.safe_load(handle)
    if env_id in sections:
        section = dict(sections[env_id])
    elif "default" in sections:
        section = dict(sections["default"])
    else:
        raise KeyError(f"no hyperparameters for {env_id!r} and no 'default' section in {path or hyperparams_path()}")
    if not include_env:
        for key in ENV_KEYS:
            section.pop(key, None)
    return section


def with_overrides(section: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``section`` updated by ``overrides``, whose ``hyperparams`` dict (DreamerConfig fields) is
    merged into the section's own rather than replacing it."""
    merged = {**section, **{key: value for key, value in overrides.items() if key != "hyperparams"}}
    merged["hyperparams"] = {**section.get("hyperparams", {}), **overrides.get("hyperparams", {})}
    return merged

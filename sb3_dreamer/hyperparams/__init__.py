"""RL Zoo-style hyperparameter files shipped with the package, one per algorithm name as in the
zoo: ``dreamer.yml`` (DreamerV3, the default), ``dreamer_v2.yml`` and ``dreamer_v1.yml`` (every
section of those sets ``version``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

#: The packaged file of each algorithm name (``rl_zoo3``'s ``--algo``).
ALGO_FILES: dict[str, str] = {"dreamer": "dreamer.yml", "dreamer_v1": "dreamer_v1.yml", "dreamer_v2": "dreamer_v2.yml"}

#: Section keys that tell rl_zoo3 how to build the env rather than how to build the agent.
ENV_KEYS = ("env_kwargs", "env_wrapper")


def hyperparams_path(algo: str = "dreamer") -> Path:
    """Path of the packaged file of ``algo`` (a key of :data:`ALGO_FILES`).

    :raises ValueError: for an unknown algorithm name
    """
    if algo not in ALGO_FILES:
        raise ValueError(f"algo must be one of {sorted(ALGO_FILES)}, got {algo!r}")
    return Path(str(resources.files(__package__).joinpath(ALGO_FILES[algo])))


def _read_sections(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def has_section(env_id: str, algo: str = "dreamer") -> bool:
    """Whether the packaged file of ``algo`` has an entry of its own for ``env_id`` (rather than
    falling back to ``default``)."""
    return env_id in _read_sections(hyperparams_path(algo))


def load_hyperparams(
    env_id: str, path: str | Path | None = None, include_env: bool = False, algo: str = "dreamer"
) -> dict[str, Any]:
    """Hyperparameters of ``env_id`` from an RL Zoo-format YAML file (``default`` if absent).

    :param env_id: gymnasium id, or a zoo section name such as ``"atari"``
    :param path: YAML file; ``None`` means the packaged file of ``algo``
    :param include_env: keep the zoo's env-building keys (:data:`ENV_KEYS`); by default they are
        dropped, since the :mod:`sb3_dreamer.envs` factories already build the env that way
    :param algo: ``"dreamer"`` (V3), ``"dreamer_v2"`` or ``"dreamer_v1"``: which packaged file
    :return: the section as a dict (zoo keys such as ``n_timesteps`` and ``policy`` included)
    """
    sections = _read_sections(path or hyperparams_path(algo))
    if env_id in sections:
        section = dict(sections[env_id])
    elif "default" in sections:
        section = dict(sections["default"])
    else:
        raise KeyError(
            f"no hyperparameters for {env_id!r} and no 'default' section in {path or hyperparams_path(algo)}"
        )
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

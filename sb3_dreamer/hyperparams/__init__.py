"""RL Zoo-style hyperparameter files shipped with the package (``dreamer.yml``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

DEFAULT_FILE = "dreamer.yml"


def hyperparams_path() -> Path:
    """Path of the packaged ``dreamer.yml``."""
    return Path(str(resources.files(__package__).joinpath(DEFAULT_FILE)))


def load_hyperparams(env_id: str, path: str | Path | None = None) -> dict[str, Any]:
    """Hyperparameters of ``env_id`` from an RL Zoo-format YAML file (``default`` if absent).

    :param env_id: gymnasium id, or a zoo section name such as ``"atari"``
    :param path: YAML file; ``None`` means the packaged ``dreamer.yml``
    :return: the section as a dict (zoo keys such as ``n_timesteps`` and ``policy`` included)
    """
    with open(path or hyperparams_path(), encoding="utf-8") as handle:
        sections = yaml.safe_load(handle)
    if env_id in sections:
        return dict(sections[env_id])
    if "default" in sections:
        return dict(sections["default"])
    raise KeyError(f"no hyperparameters for {env_id!r} and no 'default' section in {path or hyperparams_path()}")

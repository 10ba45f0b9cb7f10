"""Environments set up the way the Dreamer papers set them up.

- Atari: ``ALE/<Game>-v5`` with the emulator's own frame skip off (``frameskip=1``), frame skip 4,
  64x64 frames (grayscale or RGB), sticky actions 0.25, the full action set, 30 no-op starts, no
  life-loss terminal and no frame stacking (the RSSM is the memory). Needs the ``atari`` extra.
- DeepMind Control through shimmy's ``dm_control/<domain>-<task>-v0``: from pixels (64x64 RGB,
  camera 0, 2 for quadruped), from proprioception (flattened vector) or both (Dict), with action repeat 2. Pixels
  render headless with ``MUJOCO_GL=egl``, which importing this module sets unless already set
  (import it before anything imports mujoco). Needs the ``dmc`` extra and the system libraries
  ``libegl1`` and ``libgl1``.

``make_vec_dreamer_env`` vectorises any of them for ``n_envs > 1`` (Dummy or Subproc).
``wrap_atari`` and ``wrap_dmc`` apply the same preprocessing to an env made elsewhere (the RL Zoo
makes its envs itself and then applies these as ``env_wrapper``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

# MuJoCo picks its OpenGL backend when it is first imported: default to headless EGL before that.
os.environ.setdefault("MUJOCO_GL", "egl")

DmcObservation = Literal["pixels", "proprio", "both"]


def _require(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError as error:
        raise ImportError(f"{module} is missing: pip install 'sb3-dreamer[{extra}]'") from error


def make_atari_env(
    game: str = "Pong",
    grayscale: bool = True,
    size: int = 64,
    sticky_actions: float = 0.25,
    noop_max: int = 30,
    **make_kwargs: Any,
) -> gym.Env:
    """One Atari game with the Dreamer preprocessing.

    :param game: ALE game name, e.g. ``"Pong"`` (``ALE/Pong-v5``)
    :param grayscale: 1-channel frames if ``True``, RGB otherwise
    :param size: square frame size
    :param sticky_actions: probability of repeating the previous action
    :param noop_max: maximum number of no-op actions at reset
    :return: env with ``(size, size, 1 or 3)`` uint8 observations
    """
    ale_py = _require("ale_py", "atari")
    gym.register_envs(ale_py)
    env = gym.make(
        f"ALE/{game}-v5",
        frameskip=1,
        repeat_action_probability=sticky_actions,
        full_action_space=True,
        **make_kwargs,
    )
    return wrap_atari(env, grayscale=grayscale, size=size, noop_max=noop_max)


def wrap_atari(env: gym.Env, grayscale: bool = True, size: int = 64, noop_max: int = 30) -> gym.Env:
    """The Dreamer preprocessing of :func:`make_atari_env` around an ALE env made elsewhere.

    This is the ``env_wrapper`` of the ``atari`` section of the packaged RL Zoo file: the zoo makes
    the env itself, so the ALE settings go into its ``env_kwargs`` (``frameskip: 1``,
    ``repeat_action_probability: 0.25``, ``full_action_space: true``).

    :param env: an ALE env made with ``frameskip=1`` (the wrapper skips 4 frames itself)
    :param grayscale: 1-channel frames if ``True``, RGB otherwise
    :param size: square frame size
    :param noop_max: maximum number of no-op actions at reset
    :return: env with ``(size, size, 1 or 3)`` uint8 observations
    """
    return gym.wrappers.AtariPreprocessing(
        env,
        noop_max=noop_max,
        frame_skip=4,
        screen_size=size,
        terminal_on_life_loss=False,
        grayscale_obs=grayscale,
        grayscale_newaxis=True,
        scale_obs=False,
    )


class ActionRepeat(gym.Wrapper):
    """Repeat each action ``repeat`` times, summing rewards and stopping at an episode end."""

    def __init__(self, env: gym.Env, repeat: int) -> None:
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        super().__init__(env)
        self.repeat = repeat

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        total = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


class DmcObservationWrapper(gym.ObservationWrapper):
    """Turn a shimmy dm_control env's Dict of proprioceptive arrays into pixels, a flat float32
    vector, or a Dict of both (``{"pixels": (H, W, 3) uint8, "proprio": (D,) float32}``)."""

    def __init__(self, env: gym.Env, observation: DmcObservation, size: int) -> None:
        super().__init__(env)
        if observation not in ("pixels", "proprio", "both"):
            raise ValueError(f"observation must be 'pixels', 'proprio' or 'both', got {observation!r}")
        self.mode = observation
        assert isinstance(env.observation_space, spaces.Dict)
        self._keys = sorted(env.observation_space.spaces)
        proprio_size = sum(int(np.prod(env.observation_space[key].shape)) for key in self._keys)
        pixels = spaces.Box(0, 255, (size, size, 3), np.uint8)
        proprio = spaces.Box(-np.inf, np.inf, (proprio_size,), np.float32)
        self.observation_space = {
            "pixels": pixels,
            "proprio": proprio,
            "both": spaces.Dict({"pixels": pixels, "proprio": proprio}),
        }[observation]

    def observation(self, observation: dict[str, np.ndarray]) -> Any:
        if self.mode == "pixels":
            return self._pixels()
        proprio = np.concatenate([np.asarray(observation[key], np.float32).reshape(-1) for key in self._keys])
        if self.mode == "proprio":
            return proprio
        return {"pixels": self._pixels(), "proprio": proprio}

    def _pixels(self) -> np.ndarray:
        """The rendered frame as a contiguous ``(H, W, 3)`` array: MuJoCo's renderer returns a
        vertically flipped view (negative strides), which ``torch.as_tensor`` and so
        ``model.predict`` on this env's own observations would reject."""
        return np.ascontiguousarray(self.env.render())


#: Camera of a DeepMind Control domain where it is not 0, as in the Dreamer authors' code (V2, V3).
DMC_CAMERAS: dict[str, int] = {"quadruped": 2}


def make_dmc_env(
    domain_task: str = "cartpole-balance",
    observation: DmcObservation = "pixels",
    size: int = 64,
    camera: int | None = None,
    action_repeat: int = 2,
) -> gym.Env:
    """One DeepMind Control task through shimmy, the Dreamer way.

    Episodes end by time-out (``truncated``), never by termination.

    :param domain_task: ``"<domain>-<task>"``, e.g. ``"cartpole-balance"``, ``"walker-walk"``
    :param observation: ``"pixels"``, ``"proprio"`` or ``"both"``
    :param size: square render size for pixels
    :param camera: camera id; ``None`` takes the Dreamer authors' camera of the domain
        (:data:`DMC_CAMERAS`: 2 for quadruped, 0 otherwise)
    :param action_repeat: env steps per agent step (rewards summed)
    """
    shimmy = _require("shimmy", "dmc")
    gym.register_envs(shimmy)
    render = observation != "proprio"
    if camera is None:
        camera = DMC_CAMERAS.get(domain_task.partition("-")[0], 0)
    env = gym.make(
        f"dm_control/{domain_task}-v0",
        render_mode="rgb_array" if render else None,
        render_kwargs={"height": size, "width": size, "camera_id": camera} if render else None,
    )
    return wrap_dmc(env, observation, size, action_repeat)


def wrap_dmc(
    env: gym.Env,
    observation: DmcObservation = "pixels",
    size: int = 64,
    action_repeat: int = 2,
) -> gym.Env:
    """The Dreamer observation and action repeat of :func:`make_dmc_env` around a shimmy env made
    elsewhere (the ``env_wrapper`` of the ``dm_control/...`` sections of the packaged RL Zoo file).

    For pixels the env must render them: make it with ``render_mode="rgb_array"`` and
    ``render_kwargs={"height": size, "width": size, "camera_id": 0}`` (the zoo's ``env_kwargs``).

    :param env: a ``dm_control/<domain>-<task>-v0`` env from shimmy
    :param observation: ``"pixels"``, ``"proprio"`` or ``"both"``
    :param size: square render size for pixels; must match the env's ``render_kwargs``
    :param action_repeat: env steps per agent step (rewards summed)
    :raises ValueError: if pixels are asked for and the env does not render them at ``size``
    """
    if observation != "proprio":
        render_kwargs = getattr(env.unwrapped, "render_kwargs", None) or {}
        rendered = (render_kwargs.get("height"), render_kwargs.get("width"))
        if env.render_mode != "rgb_array" or rendered != (size, size):
            raise ValueError(
                f"observation={observation!r} needs an env made with render_mode='rgb_array' and "
                f"render_kwargs height = width = {size}; got render_mode={env.render_mode!r}, "
                f"render_kwargs={render_kwargs}"
            )
    # Repeat inside the observation wrapper, so that only the last frame of a repeat is rendered.
    return DmcObservationWrapper(ActionRepeat(env, action_repeat), observation, size)


def make_vec_dreamer_env(
    env_fn: Callable[[], gym.Env],
    n_envs: int = 1,
    seed: int | None = None,
    subprocess: bool = False,
) -> VecEnv:
    """Vectorise an env factory (e.g. ``functools.partial(make_dmc_env, "walker-walk")``) with SB3's
    ``Monitor`` on each copy, in a ``DummyVecEnv`` or, with ``subprocess=True``, a ``SubprocVecEnv``."""
    return make_vec_env(env_fn, n_envs=n_envs, seed=seed, vec_env_cls=SubprocVecEnv if subprocess else DummyVecEnv)

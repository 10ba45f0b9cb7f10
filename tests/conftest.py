"""Shared fixtures: small threads, tiny models, toy environments."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

torch.set_num_threads(1)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(stem: str) -> ModuleType:
    """The script ``examples/<stem>.py`` loaded as a module, for tests of its functions (the
    examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(stem, EXAMPLES / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CueEnv(gym.Env):
    """Each step shows a random cue in {-1, +1}; the reward is +1 if the action matches the cue
    of that step, -1 otherwise. Episodes last ``length`` steps. An agent that ignores its
    observations scores 0 in expectation; a perfect one scores ``length``."""

    metadata: dict = {"render_modes": []}

    def __init__(self, length: int = 10, action_type: str = "discrete") -> None:
        self.length = length
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        if action_type == "discrete":
            self.action_space: spaces.Space = spaces.Discrete(2)
        else:
            self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._cue = 1.0
        self._t = 0

    def _obs(self) -> np.ndarray:
        return np.array([self._cue, 1.0], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        self._cue = float(self.np_random.choice([-1.0, 1.0]))
        return self._obs(), {}

    def step(self, action):
        if isinstance(self.action_space, spaces.Discrete):
            chosen = 1.0 if int(action) == 1 else -1.0
        else:
            chosen = 1.0 if float(np.asarray(action).reshape(-1)[0]) > 0 else -1.0
        reward = 1.0 if chosen == self._cue else -1.0
        self._t += 1
        self._cue = float(self.np_random.choice([-1.0, 1.0]))
        return self._obs(), reward, False, self._t >= self.length, {}


@pytest.fixture
def tiny_kwargs() -> dict:
    """Constructor arguments for a tiny, fast Dreamer."""
    return dict(
        model_size="tiny",
        batch_size=4,
        sequence_length=8,
        learning_starts=16,
        buffer_size=2000,
        train_freq=4,
        precision="fp32",
        seed=0,
    )


class PixelCueEnv(CueEnv):
    """:class:`CueEnv` seen through a 16x16 grayscale image: the lit half (left or right) is the
    cue, so an agent must read its pixels to score."""

    def __init__(self, length: int = 10) -> None:
        super().__init__(length=length, action_type="discrete")
        self.observation_space = spaces.Box(0, 255, (16, 16, 1), np.uint8)

    def _obs(self) -> np.ndarray:
        image = np.zeros((16, 16, 1), dtype=np.uint8)
        if self._cue > 0:
            image[4:12, 9:15] = 255
        else:
            image[4:12, 1:7] = 255
        return image


def assert_same_policy_state(a, b) -> None:
    """Two Dreamer policies hold the same weights, buffers, Adam moments and step counts, and the
    same optimiser settings, bit for bit."""
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for name, tensor in state_a.items():
        torch.testing.assert_close(state_b[name], tensor, rtol=0, atol=0, msg=name)
    for optimizer in ("world_model_optimizer", "actor_optimizer", "critic_optimizer"):
        saved_a, saved_b = getattr(a, optimizer).state_dict(), getattr(b, optimizer).state_dict()
        assert saved_a["param_groups"] == saved_b["param_groups"], optimizer  # lr, betas, eps, ...
        moments_a, moments_b = saved_a["state"], saved_b["state"]
        assert moments_a.keys() == moments_b.keys(), optimizer
        for key in moments_a:
            assert moments_a[key].keys() == moments_b[key].keys(), optimizer
            for field, tensor in moments_a[key].items():  # step, exp_avg, exp_avg_sq
                torch.testing.assert_close(moments_b[key][field], tensor, rtol=0, atol=0, msg=f"{optimizer} {field}")


def assert_same_predictions(a, b, observations, steps: int = 5) -> None:
    """Deterministic ``predict`` of two models (or policies) over ``steps`` steps from fresh
    states: the same actions and the same recurrent states at every step."""
    states = [None, None]
    starts = np.ones(len(observations), dtype=bool)
    for _ in range(steps):
        (action_a, states[0]), (action_b, states[1]) = (
            model.predict(observations, state, starts, deterministic=True) for model, state in zip((a, b), states)
        )
        np.testing.assert_array_equal(action_b, action_a)
        for part_a, part_b in zip(*states):
            np.testing.assert_array_equal(part_b, part_a)
        starts = np.zeros_like(starts)

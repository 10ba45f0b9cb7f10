"""Dreamer on a custom gymnasium env that needs memory: the goal is shown only at the first step.

``RememberTheGoal`` is a T-maze: walk down a corridor, then turn left or right at its end; the
correct side is in the observation only at the first step of an episode. Nothing seen in the
corridor depends on the goal and no action can change what is seen there, so a policy that sees
just the current observation turns correctly half the time and averages exactly 0; Dreamer's
recurrent latent state carries the goal to the junction (+1). Check a custom env with SB3's
``check_env`` first.

    python examples/custom_env.py            # 20k steps
    python examples/custom_env.py --tiny     # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from sb3_dreamer import Dreamer


class RememberTheGoal(gym.Env):
    """A T-maze: ``corridor_length`` steps down a corridor, then turn left (action 0) or right (1).

    Observation ``[progress, goal hint]``: progress goes from 0 to 1 along the corridor (the same
    for both goals); the hint is the goal's side (-1 left, +1 right) at reset and 0 afterwards.
    In the corridor either action walks one step on; at the junction the turn ends the episode
    with reward +1 on the goal's side and -1 on the other. Every episode lasts
    ``corridor_length + 1`` steps.
    """

    def __init__(self, corridor_length: int = 5) -> None:
        if corridor_length < 1:
            raise ValueError(f"corridor_length must be at least 1, got {corridor_length}")
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.corridor_length = corridor_length
        self.cell, self.goal = 0, 1.0

    def _observation(self, hint: float) -> np.ndarray:
        return np.array([self.cell / self.corridor_length, hint], np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.cell = 0
        self.goal = float(self.np_random.choice([-1.0, 1.0]))
        return self._observation(self.goal), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.cell < self.corridor_length:
            self.cell += 1
            return self._observation(0.0), 0.0, False, False, {}
        turned_to_goal = (1.0 if int(action) == 1 else -1.0) == self.goal
        return self._observation(0.0), 1.0 if turned_to_goal else -1.0, True, False, {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="a smoke run with a tiny model and budget")
    args = parser.parse_args()

    check_env(RememberTheGoal())
    kwargs: dict[str, Any] = {
        "model_size": "T",
        "batch_size": 16,
        "sequence_length": 32,
        "train_freq": 4,
        "learning_starts": 1000,
    }
    steps = args.steps
    if args.tiny:
        kwargs.update(model_size="tiny", batch_size=2, sequence_length=8, train_freq=8, learning_starts=64)
        steps = 200
    model = Dreamer("MlpPolicy", Monitor(RememberTheGoal()), seed=args.seed, **kwargs)
    model.learn(steps, progress_bar=not args.tiny)
    mean, std = evaluate_policy(model, Monitor(RememberTheGoal()), n_eval_episodes=20)
    print(
        f"Evaluation return over 20 episodes: {mean:.2f} +/- {std:.2f} (a memoryless policy averages 0, memory gives 1)"
    )


if __name__ == "__main__":
    main()

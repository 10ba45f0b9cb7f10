"""Dreamer on a custom gymnasium env that needs memory: the goal is shown only at the first step.

``RememberTheGoal``: a point on a line starts at 0 and must stop at a goal at -1 or +1. The goal's
side is in the observation only at the first step of an episode (zeros afterwards), so a policy
that sees just the current observation cannot do better than guessing; Dreamer's recurrent latent
state carries the goal through the episode. Check any custom env with SB3's ``check_env`` first.

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
    """Move left, stay or move right (steps of 0.25) and reach the goal shown only at reset.

    Observation ``[position, goal hint]``: the hint is the goal's side (-1 or +1) at reset and 0
    afterwards. Reward: +1 and the end of the episode at the goal, -1 and the end at the other end,
    -0.01 per step otherwise; episodes are cut after ``max_steps`` steps (a time-out).
    """

    def __init__(self, max_steps: int = 20) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Discrete(3)
        self.max_steps = max_steps
        self.position, self.goal, self.steps = 0.0, 1.0, 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.position, self.steps = 0.0, 0
        self.goal = float(self.np_random.choice([-1.0, 1.0]))
        return np.array([self.position, self.goal], np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.position = float(np.clip(self.position + 0.25 * (int(action) - 1), -1.0, 1.0))
        self.steps += 1
        at_goal, at_wrong_end = self.position == self.goal, self.position == -self.goal
        reward = 1.0 if at_goal else -1.0 if at_wrong_end else -0.01
        observation = np.array([self.position, 0.0], np.float32)
        return observation, reward, at_goal or at_wrong_end, self.steps >= self.max_steps, {}


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
    print(f"Evaluation return over 20 episodes: {mean:.2f} +/- {std:.2f} (a memoryless policy averages at most ~0)")


if __name__ == "__main__":
    main()

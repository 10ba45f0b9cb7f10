"""Dreamer against an SB3 baseline on one task, evaluated every ``--eval-freq`` env steps, in one plot.

The baseline is PPO for discrete actions and SAC for continuous ones, with SB3's default
hyperparameters; Dreamer uses the packaged settings. ``examples/benchmark_sb3.py`` is the full
benchmark (several seeds, RL Zoo-tuned baselines) behind docs/benchmarks.md.

    python examples/compare_sb3.py --env Pendulum-v1 --steps 10000    # about 20 minutes on a CPU
    python examples/compare_sb3.py --tiny                             # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import matplotlib
import numpy as np
from gymnasium import spaces
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from sb3_dreamer import Dreamer
from sb3_dreamer.hyperparams import load_hyperparams

matplotlib.use("Agg")
from matplotlib import pyplot as plt


def make_models(env_id: str, seed: int, tiny: bool) -> dict[str, BaseAlgorithm]:
    """Dreamer with the packaged settings and the SB3 baseline for the task's action space."""
    kwargs = load_hyperparams(env_id)
    kwargs.pop("n_timesteps")
    policy = kwargs.pop("policy")
    if tiny:
        kwargs.update(model_size="tiny", batch_size=2, sequence_length=8, learning_starts=64, train_freq=8)
    dreamer = Dreamer(policy, env_id, seed=seed, **kwargs)
    discrete = isinstance(gym.make(env_id).action_space, spaces.Discrete)
    baseline = PPO("MlpPolicy", env_id, seed=seed) if discrete else SAC("MlpPolicy", env_id, seed=seed)
    return {"dreamer": dreamer, type(baseline).__name__.lower(): baseline}


class EvaluationCurve(BaseCallback):
    """Every ``eval_freq`` env steps, evaluate the model (deterministic) and keep (steps, mean, std);
    stop training at ``budget`` env steps (PPO would otherwise finish its 2048-step rollout; stopped,
    it drops the unfinished one, so at the default 10k it learns from 8192 steps)."""

    def __init__(self, env_id: str, eval_freq: int, episodes: int, budget: int) -> None:
        super().__init__()
        self.eval_env = Monitor(gym.make(env_id))
        self.eval_freq = eval_freq
        self.episodes = episodes
        self.budget = budget
        self.rows: list[tuple[int, float, float]] = []

    def _on_step(self) -> bool:
        if self.num_timesteps % self.eval_freq == 0:
            mean, std = evaluate_policy(self.model, self.eval_env, n_eval_episodes=self.episodes)
            self.rows.append((self.num_timesteps, float(mean), float(std)))
        return self.num_timesteps < self.budget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--env",
        default="Pendulum-v1",
        help="a gymnasium id; one without a packaged entry takes dreamer.yml's default section (size S, 1M steps)",
    )
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--eval-freq", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="compare.png")
    parser.add_argument("--tiny", action="store_true", help="a smoke run with a tiny model and budget")
    args = parser.parse_args()
    if args.tiny:
        args.steps, args.eval_freq, args.eval_episodes = 400, 200, 1

    plt.figure(figsize=(6, 4))
    for name, model in make_models(args.env, args.seed, args.tiny).items():
        evaluations = EvaluationCurve(args.env, args.eval_freq, args.eval_episodes, args.steps)
        model.learn(args.steps, callback=evaluations)
        curve = np.array(evaluations.rows)
        print(
            f"{name}: final evaluation return {curve[-1, 1]:.1f} +/- {curve[-1, 2]:.1f} ({model.num_timesteps} env steps)"
        )
        plt.plot(curve[:, 0], curve[:, 1], marker="o", label=name)
        plt.fill_between(curve[:, 0], curve[:, 1] - curve[:, 2], curve[:, 1] + curve[:, 2], alpha=0.2)
    plt.xlabel("env steps")
    plt.ylabel("evaluation return")
    plt.title(args.env)
    plt.legend()
    plt.tight_layout()
    plt.savefig(args.out)
    print(f"Saved {Path(args.out).resolve()}")


if __name__ == "__main__":
    main()

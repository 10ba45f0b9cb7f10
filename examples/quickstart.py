"""Quick start: train Dreamer on CartPole-v1 with a progress bar, then evaluate it.

Uses the tuned CartPole-v1 settings shipped in ``sb3_dreamer/hyperparams/dreamer.yml``.

    python examples/quickstart.py                # the tuned budget (about 16 minutes with one CPU thread: OMP_NUM_THREADS=1)
    python examples/quickstart.py --steps 2000   # a smoke run
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from sb3_dreamer import Dreamer
from sb3_dreamer.hyperparams import load_hyperparams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--env",
        default="CartPole-v1",
        help="a gymnasium id; one without a packaged entry takes dreamer.yml's default section (size S, 1M steps)",
    )
    parser.add_argument("--steps", type=int, default=None, help="env steps (default: the tuned budget)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default=None, help="optional path to save the trained model")
    args = parser.parse_args()

    hyperparams = load_hyperparams(args.env)
    total_steps = args.steps or int(hyperparams.pop("n_timesteps"))
    hyperparams.pop("n_timesteps", None)
    policy = hyperparams.pop("policy", "MlpPolicy")
    model = Dreamer(policy, args.env, seed=args.seed, verbose=0, **hyperparams)
    print(
        f"Training Dreamer on {args.env} for {total_steps} env steps "
        f"(model size {model.model_size}, precision {model.policy.compute_dtype})"
    )
    start = time.perf_counter()
    model.learn(total_steps, progress_bar=True)
    print(f"Trained in {time.perf_counter() - start:.0f} s ({model._n_updates} updates)")
    if args.save:
        model.save(args.save)
    eval_env = Monitor(gym.make(args.env))
    mean, std = evaluate_policy(model, eval_env, n_eval_episodes=10, deterministic=True)
    print(f"Mean evaluation return over 10 episodes: {mean:.1f} +/- {std:.1f}")


if __name__ == "__main__":
    main()

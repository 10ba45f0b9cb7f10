"""Dreamer on Dict observations: DeepMind Control with pixels and proprioception side by side.

``make_dmc_env(..., observation="both")`` returns ``{"pixels": (64, 64, 3) uint8, "proprio": (D,)
float32}``; ``MultiInputPolicy`` encodes each input with its own encoder (CNN for images, symlog MLP
for vectors), concatenates them, and decodes every input with its own head. Needs the ``dmc`` extra.

    python examples/dict_observations.py           # 50k agent steps with the pixel benchmark settings
    python examples/dict_observations.py --tiny    # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import functools

import gymnasium as gym
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from sb3_dreamer import Dreamer
from sb3_dreamer.envs import make_dmc_env, make_vec_dreamer_env
from sb3_dreamer.hyperparams import load_hyperparams

#: A seconds-long run: the smallest model, short sequences, training after 64 steps.
TINY = {"model_size": "tiny", "batch_size": 2, "sequence_length": 8, "learning_starts": 64, "train_freq": 8}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="cartpole-balance", help="DMC <domain>-<task>")
    parser.add_argument("--steps", type=int, default=None, help="agent steps (default: the packaged budget)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="a smoke run with a tiny model and budget")
    args = parser.parse_args()

    kwargs = load_hyperparams("dm_control/cartpole-balance-v0")
    steps = args.steps or int(kwargs.pop("n_timesteps"))
    kwargs.pop("n_timesteps", None)
    kwargs.pop("policy")
    if args.tiny:
        kwargs.update(TINY)
        steps = args.steps or 100
    env = make_vec_dreamer_env(functools.partial(make_dmc_env, args.task, observation="both"), seed=args.seed)
    for key, space in env.observation_space.spaces.items():
        print(f"observation[{key!r}]: {space.shape} {space.dtype}")
    model = Dreamer("MultiInputPolicy", env, seed=args.seed, **kwargs)
    model.learn(steps, progress_bar=not args.tiny)
    print(f"Trained for {steps} agent steps ({model._n_updates} updates)")

    eval_env = make_dmc_env(args.task, observation="both")
    if args.tiny:  # DMC episodes are 500 agent steps: cut the smoke run's one to 50
        eval_env = gym.wrappers.TimeLimit(eval_env, max_episode_steps=50)
    mean, std = evaluate_policy(model, Monitor(eval_env), n_eval_episodes=1 if args.tiny else 5)
    print(f"Evaluation return: {mean:.1f} +/- {std:.1f}")


if __name__ == "__main__":
    main()

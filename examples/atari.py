"""Dreamer on an Atari game with the Dreamer preprocessing (``sb3_dreamer.envs.make_atari_env``):
frame skip 4, 64x64 grayscale, sticky actions 0.25, the full action set, no life-loss terminal and
no frame stacking (the RSSM is the memory).

Uses the packaged ``atari`` settings. Needs the ``atari`` extra.

    python examples/atari.py --game Pong       # 50k agent steps = 200k frames
    python examples/atari.py --tiny            # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import functools

from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from sb3_dreamer import Dreamer
from sb3_dreamer.envs import make_atari_env, make_vec_dreamer_env
from sb3_dreamer.hyperparams import load_hyperparams

#: A seconds-long run: the smallest model, short sequences, training after 64 steps.
TINY = {"model_size": "tiny", "batch_size": 2, "sequence_length": 8, "learning_starts": 64, "train_freq": 8}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--game", default="Pong", help="ALE game name")
    parser.add_argument("--steps", type=int, default=None, help="agent steps (default: the packaged budget)")
    parser.add_argument("--n-envs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default=None, help="optional path to save the trained model")
    parser.add_argument("--tiny", action="store_true", help="a smoke run with a tiny model and budget")
    args = parser.parse_args()

    kwargs = load_hyperparams("atari")
    steps = args.steps or int(kwargs.pop("n_timesteps"))
    kwargs.pop("n_timesteps", None)
    policy = kwargs.pop("policy")
    # A smoke run also cuts episodes to 400 frames (100 agent steps), so that evaluation is quick.
    make_kwargs = {"max_episode_steps": 400} if args.tiny else {}
    if args.tiny:
        kwargs.update(TINY)
        steps = args.steps or 100
    make_env = functools.partial(make_atari_env, args.game, **make_kwargs)
    env = make_vec_dreamer_env(make_env, n_envs=args.n_envs, seed=args.seed)
    model = Dreamer(policy, env, seed=args.seed, **kwargs)
    print(f"Training Dreamer on {args.game} ({env.action_space.n} actions) for {steps} agent steps")
    model.learn(steps, progress_bar=not args.tiny)
    if args.save:
        model.save(args.save)

    # Atari policies are evaluated stochastically, as in the Dreamer papers and the RL Zoo.
    mean, std = evaluate_policy(model, Monitor(make_env()), n_eval_episodes=1 if args.tiny else 5, deterministic=False)
    print(f"Evaluation score: {mean:.1f} +/- {std:.1f}")


if __name__ == "__main__":
    main()

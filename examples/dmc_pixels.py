"""Dreamer from pixels on DeepMind Control: 64x64 RGB frames, action repeat 2, ``CnnPolicy``.

Uses the packaged settings of ``dm_control/cartpole-balance-v0`` (the pixel benchmark in
docs/benchmarks.md), logs an imagination video to tensorboard every ``--video-every`` updates and
writes one as a GIF at the end. Needs the ``dmc`` extra (and ``libegl1`` for headless rendering).

    python examples/dmc_pixels.py            # 50k agent steps = 100k env steps (about 2 h 15 min with one Zen 5 thread: OMP_NUM_THREADS=1)
    python examples/dmc_pixels.py --tiny     # a smoke run of a few seconds
    tensorboard --logdir runs                # the "imagination/video" image tab
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
from sb3_dreamer.video import write_imagination_video

#: A seconds-long run: the smallest model, short sequences, training after 64 steps.
TINY = {"model_size": "tiny", "batch_size": 2, "sequence_length": 8, "learning_starts": 64, "train_freq": 8}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="cartpole-balance", help="DMC <domain>-<task>")
    parser.add_argument("--steps", type=int, default=None, help="agent steps (default: the packaged budget)")
    parser.add_argument("--video-every", type=int, default=2000, help="updates between imagination videos")
    parser.add_argument("--video", default="imagination.gif", help="final imagination video (.gif or .mp4)")
    parser.add_argument("--tensorboard", default="runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="a smoke run with a tiny model and budget")
    args = parser.parse_args()

    kwargs = load_hyperparams("dm_control/cartpole-balance-v0")
    steps = args.steps or int(kwargs.pop("n_timesteps"))
    kwargs.pop("n_timesteps", None)
    policy = kwargs.pop("policy")
    if args.tiny:
        kwargs.update(TINY)
        steps = args.steps or 100
    env = make_vec_dreamer_env(functools.partial(make_dmc_env, args.task, observation="pixels"), seed=args.seed)
    model = Dreamer(
        policy,
        env,
        seed=args.seed,
        video_log_interval=1 if args.tiny else args.video_every,
        tensorboard_log=args.tensorboard,
        **kwargs,
    )
    print(f"Training Dreamer on {args.task} from pixels {env.observation_space.shape} for {steps} agent steps")
    model.learn(steps, progress_bar=not args.tiny)

    eval_env = make_dmc_env(args.task, observation="pixels")
    if args.tiny:  # DMC episodes are 500 agent steps: cut the smoke run's one to 50
        eval_env = gym.wrappers.TimeLimit(eval_env, max_episode_steps=50)
    mean, std = evaluate_policy(model, Monitor(eval_env), n_eval_episodes=1 if args.tiny else 5)
    print(f"Evaluation return: {mean:.1f} +/- {std:.1f}")
    print(f"Imagination video: {write_imagination_video(model, args.video)}")


if __name__ == "__main__":
    main()

"""Load a saved Dreamer agent and record videos of it with gymnasium's ``RecordVideo``.

The RSSM state is carried from step to step exactly as ``evaluate_policy`` does it: ``predict``
returns the new state, and ``episode_start`` resets it at the start of each episode.
Rendering CartPole needs pygame and writing MP4 moviepy: the ``extra`` extra has both (pygame-ce
provides ``pygame``; installing gymnasium's ``classic-control`` extra beside it would add a second one).

    python examples/quickstart.py --save cartpole_dreamer
    python examples/record_video.py --model cartpole_dreamer.zip --env CartPole-v1 --out videos
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np

from sb3_dreamer import Dreamer


def record(model: Dreamer, env: gym.Env, episodes: int, seed: int) -> list[float]:
    """Play ``episodes`` deterministic episodes and return their returns."""
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        state, episode_start = None, np.ones((1,), dtype=bool)
        total, done = 0.0, False
        while not done:
            action, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            episode_start = np.zeros((1,), dtype=bool)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a zip written by Dreamer.save")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--out", default="videos", help="folder for the MP4 files")
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=None, help="cut episodes to this many steps")
    args = parser.parse_args()

    model = Dreamer.load(args.model)
    env = gym.make(args.env, render_mode="rgb_array", max_episode_steps=args.max_steps)
    env = gym.wrappers.RecordVideo(env, args.out, episode_trigger=lambda _: True, name_prefix="dreamer")
    returns = record(model, env, args.episodes, args.seed)
    env.close()
    print(f"Returns: {', '.join(f'{value:.1f}' for value in returns)}")
    print(f"Videos: {sorted(str(path) for path in Path(args.out).glob('*.mp4'))}")


if __name__ == "__main__":
    main()

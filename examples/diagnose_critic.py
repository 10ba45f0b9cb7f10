"""Does the critic know the value scale? Trains one benchmark configuration and, every
``--chunk`` env steps, plays deterministic episodes on a separate env while reading the model:

- ``return``: the episode's real return (mean over ``--episodes``);
- ``value``: the critic's value of the posterior state over the first ``--window`` steps, and
  ``return_to_go``: the real discounted return from the same steps (``gamma`` of the config), so
  ``value - return_to_go`` is the critic's error in the states the policy visits (the episodes
  must be longer than ``--window`` by a few horizons of ``1 / (1 - gamma)`` for the comparison
  to be fair);
- ``reward_error``: mean absolute error of the reward head along the episode;
- ``actor_std`` (continuous actions: std of the actor's Gaussian) or ``actor_entropy``
  (discrete), and ``action_abs`` (continuous: mean absolute env action);
- ``imagined_reward`` and ``real_reward``: from each posterior state of the first ``--window``
  steps, the discounted reward of the next ``horizon`` steps as the world model imagines it for
  the deterministic actor (mean over ``--dreams`` sampled rollouts) and as it happened, so
  ``imagined_reward - real_reward`` is how optimistic the model is about the policy it trains
  (a policy that exploits model errors shows a growing gap).

``--save DIR`` keeps the model after every chunk (``DIR/model_<steps>.zip``) for later reading.

One JSON line per chunk on stdout; SB3's training metrics go to ``--log`` as CSV. The run is
built by ``examples/benchmark_sb3.py``'s ``make_model``, so ``--algo`` and ``--dreamer-kwargs``
mean what they mean there. Example (docs/benchmarks.md, "Does the critic know the value scale")::

    python examples/diagnose_critic.py --env Pendulum-v1 --algo dreamer_v2 --seed 0
    python examples/diagnose_critic.py --env Pendulum-v1 --algo dreamer_v2 --seed 0 \
        --dreamer-kwargs '{"hyperparams": {"critic_lr": 1e-3}}'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from sb3_dreamer import Dreamer
from sb3_dreamer.behavior import lambda_returns
from sb3_dreamer.policies import state_to_numpy
from sb3_dreamer.world_model import RSSMState

# the benchmark's model factory, so that --algo and --dreamer-kwargs mean the same in both scripts
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_sb3 import make_model


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """``G_t = sum_k gamma^k r_{t+k}`` to the end of the episode: ``(T,) -> (T,)``, the λ-return
    with λ = 1 and nothing to bootstrap from after the last step."""
    reward_column = torch.as_tensor(rewards, dtype=torch.float64)[:, None]  # (T, 1)
    zeros = torch.zeros(len(rewards) + 1, 1, dtype=torch.float64)  # (T + 1, 1)
    return lambda_returns(reward_column, torch.full_like(reward_column, gamma), zeros, 1.0)[:, 0].numpy()


def imagined_rewards(model: Dreamer, starts: RSSMState, dreams: int) -> np.ndarray:
    """Discounted reward of ``horizon`` imagined steps of the deterministic actor from each start
    state, averaged over ``dreams`` sampled latent rollouts: ``(N, ...) -> (N,)``."""
    policy = model.policy
    actor = policy.actor_critic.actor
    config = policy.config
    state = RSSMState(starts.deter.repeat(dreams, 1), starts.stoch.repeat(dreams, 1))  # (dreams * N, ...)
    discounted = torch.zeros(state.deter.shape[0], device=policy.device)  # (dreams * N,)
    for step in range(config.horizon):
        action = actor.mode(actor(state.features()))
        state = policy.world_model.rssm.img_step(state, action)
        discounted += config.gamma**step * policy.world_model.reward(state.features()).float()
    return discounted.view(dreams, -1).mean(0).cpu().numpy()


def real_rewards(rewards: np.ndarray, starts: int, horizon: int, gamma: float) -> np.ndarray:
    """Discounted reward of the ``horizon`` real steps after each of the first ``starts`` states,
    cut at the episode's end: ``(T,) -> (starts,)``."""
    weights = gamma ** np.arange(horizon)
    return np.array([np.dot(rewards[t : t + horizon], weights[: len(rewards[t : t + horizon])]) for t in range(starts)])


@torch.inference_mode()
def read_episode(model: Dreamer, env: gym.Env, seed: int, window: int, dreams: int) -> dict[str, float]:
    """Play one deterministic episode and compare the model's predictions with what happened."""
    policy = model.policy
    actor = policy.actor_critic.actor
    continuous = isinstance(env.action_space, spaces.Box)
    observation, _ = env.reset(seed=seed)
    state, episode_start = None, np.array([True])
    states, rewards, action_sizes = [], [], []
    done = False
    while not done:
        obs_tensor = torch.as_tensor(observation[None], dtype=torch.float32, device=policy.device)
        output = policy.step_from_numpy(obs_tensor, state, episode_start, deterministic=True)
        states.append(output.state)
        env_action, _ = policy.decode_actions(output.action)
        state = state_to_numpy(output.state, output.action)
        episode_start = np.array([False])
        observation, reward, terminated, truncated, _ = env.step(env_action[0])
        rewards.append(float(reward))
        if continuous:
            action_sizes.append(float(np.abs(env_action[0]).mean()))
        done = terminated or truncated
    episode_states = RSSMState(*(torch.cat(parts) for parts in zip(*states)))  # (T, ...)
    visited = episode_states.features()  # (T, F)
    values = policy.actor_critic.value(visited).float().cpu().numpy()  # (T,)
    params = actor(visited)  # (T, P)
    spread = actor.mean_std(params)[1] if continuous else actor.entropy(params)
    # the reward for arriving at observation t + 1 is read from the state at t + 1
    predicted_rewards = policy.world_model.reward(visited[1:]).float().cpu().numpy()  # (T - 1,)
    reward_array = np.asarray(rewards)
    returns_to_go = discounted_returns(reward_array, policy.config.gamma)
    starts = RSSMState(episode_states.deter[:window], episode_states.stoch[:window])  # (window, ...)
    imagined = imagined_rewards(model, starts, dreams)  # (window,)
    real = real_rewards(reward_array, window, policy.config.horizon, policy.config.gamma)  # (window,)
    row = {
        "return": float(reward_array.sum()),
        "value": float(values[:window].mean()),
        "return_to_go": float(returns_to_go[:window].mean()),
        "reward_error": float(np.abs(predicted_rewards - reward_array[:-1]).mean()),
        "actor_std" if continuous else "actor_entropy": float(spread.mean()),
        "imagined_reward": float(imagined.mean()),
        "real_reward": float(real.mean()),
    }
    if continuous:
        row["action_abs"] = float(np.mean(action_sizes))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Pendulum-v1", help="a vector task of examples/benchmark_sb3.py")
    parser.add_argument("--algo", default="dreamer_v2", choices=["dreamer", "dreamer_v1", "dreamer_v2"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=10_000, help="env steps in all")
    parser.add_argument("--chunk", type=int, default=1000, help="env steps between two readings")
    parser.add_argument("--episodes", type=int, default=3, help="deterministic episodes per reading")
    parser.add_argument("--window", type=int, default=50, help="first steps of an episode compared")
    parser.add_argument("--dreamer-kwargs", type=json.loads, default={}, help="JSON overrides, as in benchmark_sb3")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dreams", type=int, default=8, help="sampled imagined rollouts per start state")
    parser.add_argument("--log", default=None, help="folder for SB3's training metrics (CSV)")
    parser.add_argument("--save", default=None, help="folder to save the model in after every chunk")
    args = parser.parse_args()
    if args.steps % args.chunk:
        raise ValueError(f"--steps ({args.steps}) must be a multiple of --chunk ({args.chunk})")
    torch.set_num_threads(args.threads)
    model = make_model(args.algo, args.env, args.seed, args.steps, args.dreamer_kwargs)
    if args.log is not None:
        from stable_baselines3.common.logger import configure

        model.set_logger(configure(args.log, ["csv"]))
    env = gym.make(args.env)
    for chunk in range(args.steps // args.chunk):
        model.learn(args.chunk, reset_num_timesteps=chunk == 0)
        if args.save is not None:
            model.save(Path(args.save) / f"model_{model.num_timesteps}.zip")
        rows = [read_episode(model, env, 1000 + episode, args.window, args.dreams) for episode in range(args.episodes)]
        summary: dict[str, Any] = {"steps": model.num_timesteps}
        summary.update({key: round(float(np.mean([row[key] for row in rows])), 3) for key in rows[0]})
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()

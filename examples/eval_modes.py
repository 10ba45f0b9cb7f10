"""Diagnostic: evaluate one Dreamer run in three ways as it trains, to tell an unstable policy from
an unstable deterministic evaluation.

Every ``--eval-freq`` steps the same model plays ``--episodes`` episodes with the RSSM posterior
and the actor each taking their mode (what ``predict(deterministic=True)`` does) or sampling:
``mode / mode``, ``sample / mode`` and ``sample / sample`` (the training policy).

    python examples/eval_modes.py --env CartPole-v1 --steps 10000 --seed 0
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from sb3_dreamer import Dreamer
from sb3_dreamer.hyperparams import load_hyperparams

MODES = {"mode / mode": (False, False), "sample / mode": (True, False), "sample / sample": (True, True)}


@torch.inference_mode()
def episode_return(model: Dreamer, env: gym.Env, posterior_sample: bool, actor_sample: bool) -> float:
    """One episode with the posterior and the actor each sampled or at their mode."""
    policy = model.policy
    rssm, actor = policy.world_model.rssm, policy.actor_critic.actor
    state = policy.initial_state(1)
    prev_action = torch.zeros(1, policy.action_spec.encoding_size, device=policy.device)
    is_first = torch.ones(1, device=policy.device)
    obs, _ = env.reset()
    total, done = 0.0, False
    while not done:
        obs_tensor, _ = policy.obs_to_tensor(obs)
        embed = policy.world_model.encoder(obs_tensor[None])[0]  # (1, E)
        state = rssm.obs_step(state, prev_action, embed, is_first, sample=posterior_sample)
        params = actor(state.features())
        prev_action = actor.sample(params) if actor_sample else actor.mode(params)
        env_action, _ = policy.decode_actions(prev_action)
        obs, reward, terminated, truncated, _ = env.step(env_action[0])
        total += float(reward)
        done = terminated or truncated
        is_first = torch.zeros(1, device=policy.device)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--eval-freq", type=int, default=1000)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-size", default=None, help="override the packaged model size (e.g. tiny)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    kwargs = load_hyperparams(args.env)
    kwargs.pop("n_timesteps", None)
    policy_name = kwargs.pop("policy", "MlpPolicy")
    if args.model_size:
        kwargs["model_size"] = args.model_size
    model = Dreamer(policy_name, args.env, seed=args.seed, **kwargs)
    eval_env = gym.make(args.env)
    eval_env.reset(seed=1000 + args.seed)
    print("| steps | " + " | ".join(MODES) + " |")
    print("|---" * (len(MODES) + 1) + "|")

    class EvaluateEvery(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % args.eval_freq == 0:
                means = [
                    np.mean([episode_return(model, eval_env, *flags) for _ in range(args.episodes)])
                    for flags in MODES.values()
                ]
                print(f"| {self.num_timesteps} | " + " | ".join(f"{mean:.0f}" for mean in means) + " |", flush=True)
            return True

    model.learn(args.steps, callback=EvaluateEvery())


if __name__ == "__main__":
    main()

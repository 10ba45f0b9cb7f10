"""Diagnostic: evaluate one Dreamer run in three ways as it trains, to tell an unstable policy from
an unstable deterministic evaluation.

Every ``--eval-freq`` steps the same model plays ``--episodes`` episodes with the RSSM posterior
and the actor each taking their mode (what ``predict(deterministic=True)`` does) or sampling:
``mode / mode``, ``sample / mode`` and ``sample / sample`` (the training policy). For CartPole it
also counts how the ``mode / mode`` episodes ended (``cart``: the cart left the track; ``pole``:
the pole fell; ``time``: the 500-step limit), the actor's mean entropy (nats) over the states those
episodes visited, and the current return scale of the actor's advantage normalisation ("off" for
the versions without it, V1 and V2). ``sample / sample`` includes the collection noise
(``explore_noise``, V1's 0.3) that ``learn`` adds and ``predict`` leaves out.

    python examples/eval_modes.py --env CartPole-v1 --steps 10000 --seed 0
    python examples/eval_modes.py --env Pendulum-v1 --algo dreamer_v2 --steps 10000 --seed 1

``--dreamer-kwargs`` overrides the packaged entry (see ``sb3_dreamer.hyperparams.with_overrides``).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from sb3_dreamer import Dreamer
from sb3_dreamer.hyperparams import ALGO_FILES, load_hyperparams, with_overrides

MODES = {"mode / mode": (False, False), "sample / mode": (True, False), "sample / sample": (True, True)}


class Episode(NamedTuple):
    """What one evaluation episode gives."""

    total: float  # return
    ending: str  # "cart", "pole", "time" (CartPole) or "end"
    entropy: float  # mean actor entropy over the visited states


#: CartPole-v1's termination bounds on the cart position and the pole angle (radians)
_CART_LIMIT, _POLE_LIMIT = 2.4, 12 * 2 * np.pi / 360


def ending(obs: np.ndarray, terminated: bool, env_id: str) -> str:
    """How an episode ended; the cause of a CartPole termination read off its last observation."""
    if not terminated:
        return "time"
    if env_id.startswith("CartPole"):
        return "cart" if abs(obs[0]) > _CART_LIMIT else "pole" if abs(obs[2]) > _POLE_LIMIT else "end"
    return "end"


@torch.inference_mode()
def play_episode(model: Dreamer, env: gym.Env, posterior_sample: bool, actor_sample: bool) -> Episode:
    """One episode with the posterior and the actor each sampled or at their mode."""
    policy = model.policy
    rssm, actor = policy.world_model.rssm, policy.actor_critic.actor
    state = policy.initial_state(1)
    prev_action = torch.zeros(1, policy.action_spec.encoding_size, device=policy.device)
    is_first = torch.ones(1, device=policy.device)
    obs, _ = env.reset()
    total, done, entropies = 0.0, False, []
    while not done:
        obs_tensor, _ = policy.obs_to_tensor(obs)
        embed = policy.world_model.encoder(obs_tensor[None])[0]  # (1, E)
        state = rssm.obs_step(state, prev_action, embed, is_first, sample=posterior_sample)
        params = actor(state.features())
        entropies.append(float(actor.entropy(params)[0]))
        if actor_sample:  # the training policy's action, with the collection noise (V1's explore_noise)
            prev_action = actor.explore(actor.sample(params))
        else:
            prev_action = actor.mode(params)
        if not policy.action_spec.discrete:
            prev_action = prev_action.clamp(-1.0, 1.0)  # the executed action feeds the RSSM, as in learn
        env_action, _ = policy.decode_actions(prev_action)
        obs, reward, terminated, truncated, _ = env.step(env_action[0])
        total += float(reward)
        done = terminated or truncated
        is_first = torch.zeros(1, device=policy.device)
    return Episode(total, ending(obs, terminated, env.spec.id), float(np.mean(entropies)))


def return_scale(model: Dreamer) -> str:
    """The actor's current return scale, or "off" for a version without return normalisation."""
    if not model.policy.config.return_normalization:
        return "off"
    return f"{float(model.policy.actor_critic.return_normalizer.scale()):.2f}"


def packaged_model(
    env_id: str, seed: int, model_size: str | None, overrides: dict[str, Any], algo: str = "dreamer"
) -> Dreamer:
    """A new Dreamer with the packaged entry of ``env_id`` in ``algo``'s file (``dreamer``,
    ``dreamer_v2`` or ``dreamer_v1``), updated by ``overrides`` (the JSON of ``--dreamer-kwargs``)
    and then by ``model_size`` where given."""
    kwargs = with_overrides(load_hyperparams(env_id, algo=algo), overrides)
    kwargs.pop("n_timesteps", None)
    policy_name = kwargs.pop("policy", "MlpPolicy")
    if model_size:
        kwargs["model_size"] = model_size
    return Dreamer(policy_name, env_id, seed=seed, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--eval-freq", type=int, default=1000)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--algo", default="dreamer", choices=sorted(ALGO_FILES), help="whose packaged entry")
    parser.add_argument("--model-size", default=None, help="override the packaged model size (e.g. tiny)")
    parser.add_argument("--dreamer-kwargs", type=json.loads, default={}, help="JSON overrides of the packaged entry")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = packaged_model(args.env, args.seed, args.model_size, args.dreamer_kwargs, args.algo)
    eval_env = gym.make(args.env)
    eval_env.reset(seed=1000 + args.seed)
    print("| steps | " + " | ".join(MODES) + " | endings (mode / mode) | entropy | return scale |")
    print("|---" * (len(MODES) + 4) + "|")

    class EvaluateEvery(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % args.eval_freq == 0:
                episodes = {
                    name: [play_episode(model, eval_env, *flags) for _ in range(args.episodes)]
                    for name, flags in MODES.items()
                }
                means = " | ".join(f"{np.mean([e.total for e in runs]):.0f}" for runs in episodes.values())
                deterministic = episodes["mode / mode"]
                endings = Counter(e.ending for e in deterministic)
                entropy = np.mean([e.entropy for e in deterministic])
                counts = ", ".join(f"{name} {count}" for name, count in sorted(endings.items()))
                scale = return_scale(model)
                print(f"| {self.num_timesteps} | {means} | {counts} | {entropy:.3f} | {scale} |", flush=True)
            return True

    model.learn(args.steps, callback=EvaluateEvery())


if __name__ == "__main__":
    main()

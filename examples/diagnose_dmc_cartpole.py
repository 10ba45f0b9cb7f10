"""Diagnostic: where a Dreamer agent on DeepMind Control cartpole loses reward.

The cartpole tasks' dense reward per env step is the product of four factors, each at most 1:
``upright`` ((cos(pole angle) + 1) / 2), ``centered`` (1 at the track's centre, 0.5 beyond 2 units),
``small_control`` (1 - u^2 / 5: 0.8 at full force) and ``small_velocity`` (1 for a still pole, 0.5
for a fast one). A return of 600 in 1000 env steps can be a pole held up by full-force pushes
(small_control 0.8), a cart parked off-centre, or a pole that falls half-way; this tells them
apart. It plays a saved model (``Dreamer.save``, e.g. one written by ``benchmark_sb3.py
--save-models``) on the task from pixels and prints, per episode, the return, the mean of each
factor over the states at the agent's decisions (every ``action_repeat`` env steps; the factors
follow dm_control's own definitions), the mean |action|, the share of decisions at full force
(|u| > 0.9), the cart's range and the first env step at which the pole tipped below horizontal.

    python examples/benchmark_sb3.py --env dm_control/cartpole-balance-v0 --algos dreamer --steps 20000 \
        --eval-freq 10000 --seeds 0 --jobs 1 --out runs/pixels --save-models
    python examples/diagnose_dmc_cartpole.py runs/pixels/dm_control-cartpole-balance-v0_dreamer_seed0.zip
    python examples/diagnose_dmc_cartpole.py model.zip --stochastic   # sampled actions
"""

from __future__ import annotations

import argparse
from typing import Any, NamedTuple

import numpy as np

from sb3_dreamer import Dreamer
from sb3_dreamer.envs import make_dmc_env

FACTORS = ("upright", "centered", "small_control", "small_velocity")


class EpisodeReading(NamedTuple):
    """What one episode shows about the reward it got."""

    total: float  # the env's return
    factors: dict[str, float]  # mean of each reward factor over the decisions' states
    mean_abs_action: float
    full_force: float  # share of decisions with |u| > 0.9
    cart_range: tuple[float, float]  # (min, max) cart position
    fell_at: int | None  # first env step with the pole below horizontal, if any


def reward_factors(physics: Any) -> dict[str, float]:
    """The four factors of the cartpole tasks' dense reward in ``physics`` (a dm_control cartpole
    ``Physics``) in its current state."""
    from dm_control.utils import rewards

    centered = rewards.tolerance(physics.cart_position(), margin=2)
    control = rewards.tolerance(physics.control(), margin=1, value_at_margin=0, sigmoid="quadratic")[0]
    velocity = rewards.tolerance(physics.angular_vel(), margin=5).min()
    return {
        "upright": float(((physics.pole_angle_cosine() + 1) / 2).mean()),
        "centered": float((1 + centered) / 2),
        "small_control": float((4 + control) / 5),
        "small_velocity": float((1 + velocity) / 2),
    }


def play(model: Dreamer, task: str, seed: int, deterministic: bool, action_repeat: int) -> EpisodeReading:
    """One episode of ``model`` on ``task`` from pixels, read off the simulator after each decision."""
    env = make_dmc_env(task, observation="pixels", action_repeat=action_repeat)
    physics = env.unwrapped._env.physics  # shimmy's wrapped dm_control environment
    obs, _ = env.reset(seed=seed)
    state, start = None, np.ones((1,), dtype=bool)
    total, decisions, readings, actions, positions = 0.0, 0, [], [], []
    fell_at = None
    done = False
    while not done:
        action, state = model.predict(obs, state=state, episode_start=start, deterministic=deterministic)
        obs, reward, terminated, truncated, _ = env.step(action)
        start = np.zeros((1,), dtype=bool)
        decisions += 1
        total += float(reward)
        readings.append(reward_factors(physics))
        actions.append(float(np.abs(physics.control()).max()))
        positions.append(float(physics.cart_position()))
        if fell_at is None and physics.pole_angle_cosine().min() < 0:
            fell_at = decisions * action_repeat
        done = terminated or truncated
    env.close()
    return EpisodeReading(
        total=total,
        factors={name: float(np.mean([r[name] for r in readings])) for name in FACTORS},
        mean_abs_action=float(np.mean(actions)),
        full_force=float(np.mean(np.array(actions) > 0.9)),
        cart_range=(min(positions), max(positions)),
        fell_at=fell_at,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a saved Dreamer model (.zip) trained on the task from pixels")
    parser.add_argument("--task", default="cartpole-balance", help="a cartpole task: balance, swingup, ...")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=10_000, help="seed of the first episode's reset")
    parser.add_argument("--action-repeat", type=int, default=2)
    parser.add_argument(
        "--stochastic",
        action="store_true",
        help="sample actions (the actor's distribution, without V1's collection noise)",
    )
    args = parser.parse_args()
    if not args.task.startswith("cartpole-"):
        raise ValueError(f"the reward factors are those of the cartpole domain; got task {args.task!r}")

    model = Dreamer.load(args.model, device="cpu")
    header = ["return", *FACTORS, "mean abs action", "full force", "cart range", "pole fell at"]
    print("| episode | " + " | ".join(header) + " |")
    print("|---" * (len(header) + 1) + "|")
    episodes = []
    for episode in range(args.episodes):
        reading = play(model, args.task, args.seed + episode, not args.stochastic, args.action_repeat)
        episodes.append(reading)
        cells = [
            f"{reading.total:.0f}",
            *(f"{reading.factors[name]:.3f}" for name in FACTORS),
            f"{reading.mean_abs_action:.2f}",
            f"{reading.full_force:.0%}",
            f"{reading.cart_range[0]:+.2f} to {reading.cart_range[1]:+.2f}",
            "-" if reading.fell_at is None else str(reading.fell_at),
        ]
        print(f"| {episode} | " + " | ".join(cells) + " |", flush=True)
    means = [
        f"{np.mean([e.total for e in episodes]):.0f}",
        *(f"{np.mean([e.factors[name] for e in episodes]):.3f}" for name in FACTORS),
        f"{np.mean([e.mean_abs_action for e in episodes]):.2f}",
        f"{np.mean([e.full_force for e in episodes]):.0%}",
        "",
        f"{sum(e.fell_at is not None for e in episodes)} of {len(episodes)} fell",
    ]
    print("| mean | " + " | ".join(means) + " |")


if __name__ == "__main__":
    main()

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
It also reads the agent itself at each decision: the median std of its actor's Gaussian (how
widely it explores when it samples; V2's truncated Normal has a floor of 0.1), and its critic's
value at the first decision beside the discounted return that followed it (at the model's γ, per
decision), which shows whether the critic over- or under-rates what the policy achieves, and its
reward head's mean error on the episode's own states (the reward predicted at each posterior state
minus the reward received on entering it), a bias that open-loop predictions inherit.

``--imagine H`` also checks the world model against the simulator every ``--imagine-every``
decisions: from the agent's posterior state it predicts the reward of the next ``H`` decisions
under four open-loop plans (the actor's own, taken along the prior's mean path; no force; full
force either way), averaged over 16 sampled imagined rollouts of each, and the simulator replays
the same actions from the same physics state (on a second, unrendered copy of the task). A
second table gives each plan's predicted and real reward and how often each ranks first: a model
that prefers the actor's plan where the simulator prefers no force misleads the actor; a model
that ranks them right leaves the fault with the actor or the critic.

``--reference zero``, ``full`` or ``random`` plays a fixed policy instead of a model (no force at
all, full force in the positive direction, or uniform random forces), the yardsticks for a
return: on cartpole-balance the pole of this frictionless system falls, swings through the top
again and again, and collects most of the reward with no force at all. These episodes run on
proprioceptive observations, which they ignore (same physics and reward, no rendering); the actor
and critic columns are then empty.

    python examples/benchmark_sb3.py --env dm_control/cartpole-balance-v0 --algos dreamer --steps 20000 \
        --eval-freq 10000 --seeds 0 --jobs 1 --out runs/pixels --save-models
    python examples/diagnose_dmc_cartpole.py runs/pixels/dm_control-cartpole-balance-v0_dreamer_seed0.zip
    python examples/diagnose_dmc_cartpole.py model.zip --stochastic   # sampled actions
    python examples/diagnose_dmc_cartpole.py model.zip --imagine 15   # the model's predictions against the simulator
    python examples/diagnose_dmc_cartpole.py --reference zero         # the no-force policy
"""

from __future__ import annotations

import argparse
from typing import Any, NamedTuple

import numpy as np
import torch

from sb3_dreamer import Dreamer
from sb3_dreamer.behavior import Actor
from sb3_dreamer.envs import make_dmc_env
from sb3_dreamer.world_model import RSSMState, WorldModel

FACTORS = ("upright", "centered", "small_control", "small_velocity")
#: The constant forces among ``--imagine``'s open-loop plans: no force, full force either way.
CONSTANT_PLANS = {"zero": 0.0, "push +1": 1.0, "push -1": -1.0}
#: The open-loop plans ``--imagine`` compares: the actor's own, then the constant forces.
PLANS = ("actor", *CONSTANT_PLANS)
#: Sampled imagined rollouts averaged per plan.
IMAGINED_SAMPLES = 16


class PlanCheck(NamedTuple):
    """The reward of one open-loop plan over the horizon, as the model predicts it and as it is."""

    predicted: float  # mean over sampled imagined rollouts of the summed predicted reward
    real: float  # the simulator's summed reward for the same actions from the same physics state


class EpisodeReading(NamedTuple):
    """What one episode shows about the reward it got."""

    total: float  # the env's return
    factors: dict[str, float]  # mean of each reward factor over the decisions' states
    mean_abs_action: float
    full_force: float  # share of decisions with |u| > 0.9
    cart_range: tuple[float, float]  # (min, max) cart position
    fell_at: int | None  # first env step with the pole below horizontal, if any
    actor_std: float | None  # median over decisions of the actor's std (mean over action dimensions)
    first_value: float | None  # the critic's value of the state at the first decision
    first_return: float | None  # the discounted return from the first decision on, at the model's gamma
    reward_error: float | None  # mean over decisions of the reward head's prediction minus the reward
    plan_checks: tuple[dict[str, PlanCheck], ...] = ()  # one per ``--imagine`` check point


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


REFERENCES = ("zero", "full", "random")
#: The readings of the agent itself (none for a reference policy), with their formats.
AGENT_COLUMNS = (("actor_std", ".3f"), ("first_value", ".1f"), ("first_return", ".1f"), ("reward_error", "+.3f"))


def play(
    model: Dreamer | str,
    task: str,
    seed: int,
    deterministic: bool,
    action_repeat: int,
    imagine: int = 0,
    imagine_every: int = 25,
) -> EpisodeReading:
    """One episode on ``task``, read off the simulator after each decision: of a Dreamer ``model``
    from pixels, or of a reference policy named in :data:`REFERENCES` (on proprioceptive
    observations, which it ignores; ``deterministic`` does not apply to it). With ``imagine > 0``
    (a model only) every ``imagine_every``-th decision also checks :data:`PLANS` over ``imagine``
    decisions (:func:`check_plans`)."""
    is_reference = isinstance(model, str)
    if is_reference and model not in REFERENCES:
        raise ValueError(f"reference policy must be one of {REFERENCES}, got {model!r}")
    if imagine < 0 or imagine_every < 1:
        raise ValueError(f"need imagine >= 0 and imagine_every >= 1, got {imagine} and {imagine_every}")
    if imagine and is_reference:
        raise ValueError("imagine checks a model's predictions; a reference policy has none")
    env = make_dmc_env(task, observation="proprio" if is_reference else "pixels", action_repeat=action_repeat)
    physics = env.unwrapped._env.physics  # shimmy's wrapped dm_control environment
    replay_env = make_dmc_env(task, observation="proprio", action_repeat=action_repeat) if imagine else None
    plan_checks = []
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    state, start = None, np.ones((1,), dtype=bool)
    total, decisions, readings, actions, positions = 0.0, 0, [], [], []
    rewards, stds, first_value, reward_errors = [], [], 0.0, []
    fell_at = None
    done = False
    while not done:
        if is_reference:
            action = reference_action(model, env.action_space.shape, rng)
        else:
            action, state = model.predict(obs, state=state, episode_start=start, deterministic=deterministic)
            std, value, predicted_reward = read_agent(model, state)
            stds.append(std)
            if decisions == 0:
                first_value = value
            else:
                reward_errors.append(predicted_reward - rewards[-1])
            if imagine and decisions % imagine_every == 0:
                plan_checks.append(check_plans(model, state, physics.get_state(), replay_env, imagine))
        obs, reward, terminated, truncated, _ = env.step(action)
        start = np.zeros((1,), dtype=bool)
        decisions += 1
        total += float(reward)
        rewards.append(float(reward))
        readings.append(reward_factors(physics))
        actions.append(float(np.abs(physics.control()).max()))
        positions.append(float(physics.cart_position()))
        if fell_at is None and physics.pole_angle_cosine().min() < 0:
            fell_at = decisions * action_repeat
        done = terminated or truncated
    env.close()
    if replay_env is not None:
        replay_env.close()
    return EpisodeReading(
        total=total,
        factors={name: float(np.mean([r[name] for r in readings])) for name in FACTORS},
        mean_abs_action=float(np.mean(actions)),
        full_force=float(np.mean(np.array(actions) > 0.9)),
        cart_range=(min(positions), max(positions)),
        fell_at=fell_at,
        actor_std=None if is_reference else float(np.median(stds)),
        first_value=None if is_reference else first_value,
        first_return=None if is_reference else discounted_return(rewards, model.dreamer_config.gamma),
        reward_error=None if is_reference else float(np.mean(reward_errors)),
        plan_checks=tuple(plan_checks),
    )


def check_plans(
    model: Dreamer, state: tuple[np.ndarray, ...], physics_state: np.ndarray, replay_env: Any, horizon: int
) -> dict[str, PlanCheck]:
    """Each of :data:`PLANS` over ``horizon`` decisions from the posterior state of ``state``
    (``predict``'s, one env) and the simulator's ``physics_state`` at the same decision: the reward
    the world model predicts for its actions (mean over :data:`IMAGINED_SAMPLES` sampled rollouts
    of the prior) and the reward ``replay_env`` (an unrendered copy of the task) returns for them."""
    world_model, actor = model.policy.world_model, model.policy.actor_critic.actor
    start = posterior_state(model, state)
    action_size = model.action_space.shape[0]
    checks = {}
    with torch.no_grad():
        for plan in PLANS:
            actions = plan_actions(world_model, actor, start, plan, horizon, action_size)  # (H, A)
            latent = RSSMState(*(part.expand(IMAGINED_SAMPLES, -1) for part in start))
            predicted = torch.zeros(IMAGINED_SAMPLES, device=model.device)
            for action in actions:
                latent = world_model.rssm.img_step(latent, action.expand(IMAGINED_SAMPLES, -1))
                predicted += world_model.reward(latent.features()).float()  # (K,)
            real = replay(replay_env, physics_state, actions.cpu().numpy())
            checks[plan] = PlanCheck(predicted=float(predicted.mean()), real=real)
    return checks


def plan_actions(
    world_model: WorldModel, actor: Actor, start: RSSMState, plan: str, horizon: int, action_size: int
) -> torch.Tensor:
    """The ``(horizon, A)`` actions of ``plan``: the actor's most likely action along the prior's
    mean (or most likely) path from ``start``, or a constant force."""
    if plan != "actor":
        return torch.full((horizon, action_size), CONSTANT_PLANS[plan], device=start.deter.device)
    actions, latent = [], start
    for _ in range(horizon):
        action = actor.mode(actor(latent.features()))  # (1, A)
        actions.append(action[0])
        latent = world_model.rssm.img_step(latent, action, sample=False)
    return torch.stack(actions)


def replay(env: Any, physics_state: np.ndarray, actions: np.ndarray) -> float:
    """Summed reward of ``actions`` ``(H, A)`` played open loop in ``env`` from ``physics_state``."""
    env.reset(seed=0)
    physics = env.unwrapped._env.physics
    with physics.reset_context():
        physics.set_state(physics_state)
    total = 0.0
    for action in actions:
        _, reward, terminated, truncated, _ = env.step(action.astype(np.float32))
        total += float(reward)
        if terminated or truncated:
            break
    return total


def reference_action(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """The action of the reference policy ``name`` (one of :data:`REFERENCES`)."""
    if name == "zero":
        return np.zeros(shape, dtype=np.float32)
    if name == "full":
        return np.ones(shape, dtype=np.float32)
    return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)


def read_agent(model: Dreamer, state: tuple[np.ndarray, ...]) -> tuple[float, float, float]:
    """The actor's std (mean over action dimensions), the critic's value and the reward head's
    prediction at the posterior state of ``state`` (``predict``'s ``(deter, stoch, prev_action)``
    for one env)."""
    actor_critic = model.policy.actor_critic
    features = posterior_state(model, state).features()  # (1, F)
    with torch.no_grad():
        _, std = actor_critic.actor.mean_std(actor_critic.actor(features))  # (1, A)
        value = actor_critic.value(features)  # (1,)
        reward = model.policy.world_model.reward(features)  # (1,)
    return float(std.mean()), float(value.float().squeeze()), float(reward.float().squeeze())


def posterior_state(model: Dreamer, state: tuple[np.ndarray, ...]) -> RSSMState:
    """The RSSM state of ``predict``'s ``(deter, stoch, prev_action)`` for one env, as tensors."""
    return RSSMState(*(torch.as_tensor(part, device=model.device) for part in state[:2]))


def mean_or_none(values: list[float | None]) -> float | None:
    """Mean of ``values``, or ``None`` where the readings are missing (a reference policy)."""
    return None if any(value is None for value in values) else float(np.mean(values))


def optional(value: float | None, spec: str) -> str:
    """``value`` formatted by ``spec``, or empty for a reference policy's missing reading."""
    return "" if value is None else format(value, spec)


def discounted_return(rewards: list[float], gamma: float) -> float:
    """``sum_t gamma^t r_t`` of one episode's rewards per decision."""
    return float(np.sum(np.asarray(rewards) * gamma ** np.arange(len(rewards))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", help="a saved Dreamer model (.zip) trained on the task from pixels")
    parser.add_argument("--reference", choices=REFERENCES, help="play this fixed policy instead of a model")
    parser.add_argument("--task", default="cartpole-balance", help="a cartpole task: balance, swingup, ...")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=10_000, help="seed of the first episode's reset")
    parser.add_argument("--action-repeat", type=int, default=2)
    parser.add_argument(
        "--stochastic",
        action="store_true",
        help="sample actions (the actor's distribution, without V1's collection noise)",
    )
    parser.add_argument(
        "--imagine",
        type=int,
        default=0,
        metavar="H",
        help="check the world model's predicted reward of open-loop plans over H decisions against the simulator",
    )
    parser.add_argument("--imagine-every", type=int, default=25, help="decisions between two --imagine checks")
    args = parser.parse_args()
    if not args.task.startswith("cartpole-"):
        raise ValueError(f"the reward factors are those of the cartpole domain; got task {args.task!r}")

    if (args.model is None) == (args.reference is None):
        parser.error("give either a model or --reference")
    model = args.reference if args.model is None else Dreamer.load(args.model, device="cpu")
    header = [
        "return",
        *FACTORS,
        "mean abs action",
        "full force",
        "cart range",
        "pole fell at",
        "actor std",
        "critic at start",
        "discounted return",
        "reward head error",
    ]
    print("| episode | " + " | ".join(header) + " |")
    print("|---" * (len(header) + 1) + "|")
    episodes = []
    for episode in range(args.episodes):
        reading = play(
            model,
            args.task,
            args.seed + episode,
            not args.stochastic,
            args.action_repeat,
            imagine=args.imagine,
            imagine_every=args.imagine_every,
        )
        episodes.append(reading)
        cells = [
            f"{reading.total:.0f}",
            *(f"{reading.factors[name]:.3f}" for name in FACTORS),
            f"{reading.mean_abs_action:.2f}",
            f"{reading.full_force:.0%}",
            f"{reading.cart_range[0]:+.2f} to {reading.cart_range[1]:+.2f}",
            "-" if reading.fell_at is None else str(reading.fell_at),
            *(optional(getattr(reading, name), spec) for name, spec in AGENT_COLUMNS),
        ]
        print(f"| {episode} | " + " | ".join(cells) + " |", flush=True)
    means = [
        f"{np.mean([e.total for e in episodes]):.0f}",
        *(f"{np.mean([e.factors[name] for e in episodes]):.3f}" for name in FACTORS),
        f"{np.mean([e.mean_abs_action for e in episodes]):.2f}",
        f"{np.mean([e.full_force for e in episodes]):.0%}",
        "",
        f"{sum(e.fell_at is not None for e in episodes)} of {len(episodes)} fell",
        *(optional(mean_or_none([getattr(e, name) for e in episodes]), spec) for name, spec in AGENT_COLUMNS),
    ]
    print("| mean | " + " | ".join(means) + " |")
    if args.imagine:
        print_plan_table([check for e in episodes for check in e.plan_checks], args.imagine)


def print_plan_table(checks: list[dict[str, PlanCheck]], horizon: int) -> None:
    """Per plan, over all check points: mean predicted and real reward over ``horizon`` decisions,
    the mean error, and the share of check points where the model and the simulator rank it first."""
    model_best = [max(PLANS, key=lambda plan: check[plan].predicted) for check in checks]
    real_best = [max(PLANS, key=lambda plan: check[plan].real) for check in checks]
    print(f"\n{len(checks)} check points, reward over the next {horizon} decisions:\n")
    print("| plan | model | simulator | model - simulator | model ranks it first | simulator ranks it first |")
    print("|---|---|---|---|---|---|")
    for plan in PLANS:
        predicted = np.array([check[plan].predicted for check in checks])
        real = np.array([check[plan].real for check in checks])
        print(
            f"| {plan} | {predicted.mean():.2f} | {real.mean():.2f} | {(predicted - real).mean():+.2f} | "
            f"{np.mean([best == plan for best in model_best]):.0%} | {np.mean([best == plan for best in real_best]):.0%} |"
        )
    agree = np.mean([m == r for m, r in zip(model_best, real_best)])
    print(f"\nmodel and simulator rank the same plan first at {agree:.0%} of the check points")


if __name__ == "__main__":
    main()

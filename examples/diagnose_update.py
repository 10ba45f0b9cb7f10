"""Diagnostic of one Dreamer update: how far the critic lags behind its λ-return targets, how fast
it catches up, and how much of the actor's gradient is noise or bf16 rounding.

Trains the packaged DreamerV3 entry of ``--env`` (with ``--dreamer-kwargs`` overrides, as in
``benchmark_sb3.py``) for ``--steps`` env steps (or loads ``--load``, a
model saved with its replay buffer by an earlier run of this script), then on a fixed replay batch
prints the critic's mean value, the imagined λ-returns it regresses and the imagined survival
(cumulative product of the predicted continue flags). From that snapshot it runs
``--updates`` critic-only updates (world model and actor frozen) for every learning rate in
``--critic-lrs`` and prints the mean value of the batch every 50 updates: a critic far below its
targets that closes the gap slowly is the bottleneck of a short run.

On ``--gradient-batches`` replay batches it checks the inputs of the critic's targets: the
continue head's probability at the real terminal steps against elsewhere, and (flat vector
observations) the correlation of the critic's value with each observation component's magnitude;
the KL between posterior and prior per replayed step against the free-bits floor (how much the
latent takes from each observation); on CartPole also the continue head at the terminals where the
cart left the track and where the pole fell, and by cart position the share of the replayed states,
the critic's value and the decoder's error and outward bias.
It also prints cosine similarities of the actor's gradient on the snapshot: bf16 against float32
on the same batch and random numbers (the rounding), two imagination draws of the same batch
(sampling noise), and two batches, each averaged over ``--gradient-batches`` batches.

    python examples/diagnose_update.py --env CartPole-v1 --steps 4000 --seed 3 --save /tmp/cartpole4k
    python examples/diagnose_update.py --load /tmp/cartpole4k --critic-lrs 1e-4 1e-3
"""

from __future__ import annotations

import argparse
import copy
import json
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch
from eval_modes import ending, packaged_model  # same folder

from sb3_dreamer import Dreamer
from sb3_dreamer.behavior import imagine
from sb3_dreamer.buffers import SequenceBatch
from sb3_dreamer.distributions import symexp
from sb3_dreamer.precision import autocast


@torch.no_grad()
def snapshot(model: Dreamer, batch: SequenceBatch) -> dict[str, float]:
    """Critic value of the batch's posterior states, their imagined λ-return and imagined survival."""
    policy = model.policy
    world_model, actor_critic = policy.world_model, policy.actor_critic
    actions = policy.encode_actions(batch.actions)
    wm = world_model.loss(batch.observations, actions, batch.rewards, batch.is_first, batch.is_terminal)
    trajectory = imagine(world_model, actor_critic.actor, wm.posterior, actor_critic.config.horizon, grad=False)
    survival = torch.cumprod(world_model.continuation(trajectory.features[1:]), 0)  # (H, N)
    normalizer = copy.deepcopy(actor_critic.return_normalizer.state_dict())
    output = actor_critic.actor_loss(world_model, wm.posterior, wm.start_continue)  # imagines anew
    actor_critic.return_normalizer.load_state_dict(normalizer)  # a diagnostic must not move the EMA
    posterior = wm.posterior
    return {
        "value": float(actor_critic.value(posterior.features()).mean()),
        "return": float(output.returns[0].mean()),
        "survival": float(survival[-1].mean()),
    }


class ReplayProbe(NamedTuple):
    """What :func:`replay_probe` measured on the replayed posterior states."""

    continue_prob: np.ndarray  # (N,) the continue head's probability of going on
    terminal: np.ndarray  # (N,) real terminal flags
    values: np.ndarray  # (N,) critic values
    observations: np.ndarray | None  # (N, D) flat vector observations, None for other spaces
    decoded: np.ndarray | None  # (N, D) their reconstruction by the decoder
    kl: np.ndarray  # (N,) KL(posterior || prior) of each replayed step

    def correlations(self) -> np.ndarray:
        """Correlation of the value with the magnitude of each observation component, ``(D,)``."""
        assert self.observations is not None
        return np.array([np.corrcoef(self.values, np.abs(column))[0, 1] for column in self.observations.T])


@torch.no_grad()
def replay_probe(model: Dreamer, batches: int) -> ReplayProbe:
    """The continue head's probability of going on, the real terminal flags, the critic's value
    and (flat vector observations) the observation of every step of ``batches`` replay batches:
    does the model see the terminations the critic must learn from, and does the value depend on,
    e.g., CartPole's cart position?"""
    policy = model.policy
    world_model, actor_critic = policy.world_model, policy.actor_critic
    continue_probs, terminals, values, flat_observations, decoded, kls = [], [], [], [], [], []
    decoder, rssm = world_model.decoder, world_model.rssm
    for _ in range(batches):
        batch = model.replay_buffer.sample(model.batch_size)
        actions = policy.encode_actions(batch.actions)
        observed = rssm.observe(world_model.encoder(batch.observations), actions, batch.is_first)
        features = torch.cat([observed.deter, observed.stoch], dim=-1).flatten(0, 1)  # (L*B, F), time-major
        kls.append(rssm.latent.kl(observed.post_stats, rssm.prior_stats(observed.deter)).reshape(-1).float())
        continue_probs.append(torch.sigmoid(world_model.continue_head(features).squeeze(-1).float()))  # (L*B,)
        terminals.append(batch.is_terminal.reshape(-1).bool())
        values.append(actor_critic.value(features).float())
        observations = batch.observations
        if isinstance(observations, torch.Tensor) and observations.dim() == 3:  # (L, B, D)
            flat_observations.append(observations.reshape(-1, observations.shape[-1]).float())
            reconstruction = decoder.mlp(features).float()  # (L*B, D), symlog space unless raw inputs
            decoded.append(symexp(reconstruction) if decoder.symlog_inputs else reconstruction)
    return ReplayProbe(
        torch.cat(continue_probs).numpy(),
        torch.cat(terminals).numpy(),
        torch.cat(values).numpy(),
        torch.cat(flat_observations).numpy() if flat_observations else None,
        torch.cat(decoded).numpy() if decoded else None,
        torch.cat(kls).numpy(),
    )


def report_replay_probe(probe: ReplayProbe, env_id: str, batches: int, free_bits: float) -> None:
    """Print the continue head at real terminals (per CartPole ending), the KL per replayed step
    against the free-bits floor, the value's correlations with the observation components, and on
    CartPole the replay's share, the critic's value and the decoder's error and bias by cart position."""
    terminal = probe.terminal
    at_terminals = probe.continue_prob[terminal].mean() if terminal.any() else float("nan")
    print(
        f"continue head over {batches} batches: p(continue) {at_terminals:.3f} at the {terminal.sum()} "
        f"real terminal steps, {probe.continue_prob[~terminal].mean():.3f} elsewhere"
    )
    print(
        f"KL(posterior || prior) per replayed step: mean {probe.kl.mean():.3f}, median {np.median(probe.kl):.3f}, "
        f"below the free-bits floor {free_bits:g} at {np.mean(probe.kl < free_bits):.0%} of the steps"
    )
    if probe.observations is None:
        return
    print(
        "correlation of the critic value with |observation[i]|: "
        + ", ".join(f"[{index}] {value:+.2f}" for index, value in enumerate(probe.correlations()))
    )
    if not env_id.startswith("CartPole"):
        return
    endings = np.array([ending(obs, True, env_id) for obs in probe.observations[terminal]])
    print(
        "p(continue) at CartPole terminals by ending: "
        + ", ".join(
            f"{name} {probe.continue_prob[terminal][endings == name].mean():.3f} (n {np.sum(endings == name)})"
            for name in ("cart", "pole")
            if np.any(endings == name)
        )
    )
    cart = np.abs(probe.observations[:, 0])
    bins = [(low, low + 0.5) for low in (0.0, 0.5, 1.0, 1.5)] + [(2.0, 2.4)]
    in_bin = [((cart >= low) & (cart < high), f"[{low:g}, {high:g})") for low, high in bins]
    print(
        "critic value of non-terminal states by |cart position|: "
        + ", ".join(
            f"{name} {probe.values[rows & ~terminal].mean():.1f}" for rows, name in in_bin if any(rows & ~terminal)
        )
    )
    assert probe.decoded is not None
    signed_error = probe.decoded[:, 0] - probe.observations[:, 0]  # (N,) cart position reconstruction error
    outward_error = signed_error * np.sign(probe.observations[:, 0])  # (N,) > 0: placed farther out than it is
    all_bins = in_bin + [(cart >= 2.4, ">= 2.4")]
    print("replayed states by |cart position|: " + ", ".join(f"{name} {rows.mean():.1%}" for rows, name in all_bins))
    print(
        "decoder's cart-position error by |cart position|: "
        + ", ".join(f"{name} {np.abs(signed_error[rows]).mean():.3f}" for rows, name in all_bins if any(rows))
    )
    print(
        "decoder's outward cart-position bias by |cart position|: "
        + ", ".join(f"{name} {outward_error[rows].mean():+.3f}" for rows, name in all_bins if any(rows))
    )


def actor_gradient(model: Dreamer, batch: SequenceBatch, dtype: torch.dtype, imagination_seed: int) -> torch.Tensor:
    """The actor's flattened loss gradient on ``batch``, matmuls in ``dtype``, with the posterior
    samples fixed and the imagination drawn from ``imagination_seed``; the return statistics are
    left as they were."""
    policy = model.policy
    actor_critic = policy.actor_critic
    actions = policy.encode_actions(batch.actions)
    torch.manual_seed(0)
    with torch.no_grad(), autocast(policy.device, dtype):
        wm = policy.world_model.loss(batch.observations, actions, batch.rewards, batch.is_first, batch.is_terminal)
    normalizer = copy.deepcopy(actor_critic.return_normalizer.state_dict())
    torch.manual_seed(imagination_seed)
    with autocast(policy.device, dtype):
        loss = actor_critic.actor_loss(policy.world_model, wm.posterior, wm.start_continue).loss
    actor_critic.return_normalizer.load_state_dict(normalizer)
    gradients = torch.autograd.grad(loss, list(actor_critic.actor.parameters()))
    return torch.cat([gradient.flatten() for gradient in gradients])


def gradient_agreement(model: Dreamer, batches: int) -> dict[str, tuple[float, float]]:
    """Cosine similarities of actor gradients, mean and std over ``batches`` replay batches:
    bf16 vs float32 (same batch and random numbers), two imagination draws of one batch, and that
    batch against the next one (float32)."""
    samples: dict[str, list[float]] = {"bf16 vs fp32": [], "two imagination draws": [], "two batches": []}
    batch = model.replay_buffer.sample(model.batch_size)
    for _ in range(batches):
        other_batch = model.replay_buffer.sample(model.batch_size)
        reference = actor_gradient(model, batch, torch.float32, 1)
        others = {
            "bf16 vs fp32": actor_gradient(model, batch, torch.bfloat16, 1),
            "two imagination draws": actor_gradient(model, batch, torch.float32, 2),
            "two batches": actor_gradient(model, other_batch, torch.float32, 1),
        }
        for name, other in others.items():
            samples[name].append(float(torch.nn.functional.cosine_similarity(reference, other, dim=0)))
        batch = other_batch
    return {name: (float(np.mean(values)), float(np.std(values))) for name, values in samples.items()}


def critic_updates(model: Dreamer, lr: float, updates: int, probe: SequenceBatch) -> list[tuple[int, float]]:
    """``updates`` critic-only Dreamer updates at learning rate ``lr`` on a copy of ``model``'s
    actor-critic; returns ``(updates, mean value of the probe batch)`` every 50 updates."""
    policy = model.policy
    original = policy.actor_critic
    actor_critic = copy.deepcopy(original)
    optimizer = torch.optim.Adam(actor_critic.critic.parameters(), lr=lr, eps=actor_critic.config.actor_critic_eps)
    policy.actor_critic = actor_critic
    curve = []
    try:
        for update in range(1, updates + 1):
            batch = model.replay_buffer.sample(model.batch_size)
            actions = policy.encode_actions(batch.actions)
            with torch.no_grad(), autocast(policy.device, policy.compute_dtype):
                wm = policy.world_model.loss(
                    batch.observations, actions, batch.rewards, batch.is_first, batch.is_terminal
                )
            with autocast(policy.device, policy.compute_dtype):
                output = actor_critic.actor_loss(policy.world_model, wm.posterior, wm.start_continue)
                loss = actor_critic.critic_loss(output)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(actor_critic.critic.parameters(), actor_critic.config.actor_critic_grad_clip)
            optimizer.step()
            actor_critic.update_slow_critic()
            if update % 50 == 0:
                curve.append((update, snapshot(model, probe)["value"]))
    finally:
        policy.actor_critic = original
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-size", default=None, help="override the packaged model size (e.g. tiny)")
    parser.add_argument("--dreamer-kwargs", type=json.loads, default={}, help="JSON overrides of the packaged entry")
    parser.add_argument("--save", default=None, help="save the trained model and its replay buffer here")
    parser.add_argument("--load", default=None, help="skip training: load a model saved with --save")
    parser.add_argument("--critic-lrs", type=float, nargs="+", default=[1e-4, 1e-3])
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--gradient-batches", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.load:
        model = Dreamer.load(args.load)
        if model.observation_space != gym.make(args.env).observation_space:
            parser.error(f"--load {args.load} was not trained on --env {args.env}: its observation space differs")
        model.load_replay_buffer(args.load + "_buffer")
    else:
        model = packaged_model(args.env, args.seed, args.model_size, args.dreamer_kwargs)
        model.learn(args.steps)
        if args.save:
            model.save(args.save)
            model.save_replay_buffer(args.save + "_buffer")
    model.policy.set_training_mode(True)
    torch.manual_seed(args.seed)
    probe = model.replay_buffer.sample(model.batch_size)
    stats = snapshot(model, probe)
    horizon = model.policy.config.horizon
    print(
        f"critic value {stats['value']:.1f}, imagined λ-return {stats['return']:.1f}, "
        f"imagined survival over {horizon} steps {stats['survival']:.3f}"
    )
    free_bits = model.policy.world_model.config.free_bits
    report_replay_probe(replay_probe(model, args.gradient_batches), args.env, args.gradient_batches, free_bits)
    agreement = gradient_agreement(model, args.gradient_batches)
    print(
        f"actor gradient cosine over {args.gradient_batches} batches: "
        + ", ".join(f"{name} {mean:.2f} ± {std:.2f}" for name, (mean, std) in agreement.items())
    )
    config = model.policy.actor_critic.config
    print(f"critic-only updates (γ {config.gamma}, slow-critic regulariser {config.slow_reg_scale}), mean value:")
    for lr in args.critic_lrs:
        curve = critic_updates(model, lr, args.updates, probe)
        print(f"critic lr {lr:g}: " + ", ".join(f"{update}: {value:.1f}" for update, value in curve), flush=True)


if __name__ == "__main__":
    main()

"""Reference timing: one DreamerV3 update of the sheeprl library (0.8.4) on this machine.

Builds sheeprl's own DreamerV3 world model, actor and critic (``sheeprl.algos.dreamer_v3.agent.build_agent``)
from sheeprl's own packaged hydra configuration (``exp=dreamer_v3``, ``algo=dreamer_v3_S``, ``env=gym``), on a
vector observation (Pendulum-v1, continuous actions, or CartPole-v1, discrete actions), and times sheeprl's own
gradient step ``sheeprl.algos.dreamer_v3.dreamer_v3.train`` (world model, then actor and critic on trajectories
imagined from every latent state of the batch) on a random batch of ``--batch`` sequences x ``--length`` steps
(16 x 64 by default, the ``exp=dreamer_v3`` values), imagination horizon ``--horizon`` (15). As sheeprl's training
loop does at every gradient step, the EMA update of the target critic (tau 0.02) runs just before ``train`` and is
part of the timed update. Prints seconds per update, GFLOP per update (``torch.utils.flop_counter.FlopCounterMode``
on one update: matmuls/convolutions only) and the achieved GFLOP/s, so that sb3-dreamer's update time
(``examples/benchmark_speed.py``) can be compared with it in the same run on the same machine.

sheeprl is NOT a dependency of sb3-dreamer: install it into a separate virtual environment that reuses the system
torch (sheeprl 0.8.4 asks ``torch>=2.6``, which the installed torch satisfies; the constraint file makes sure pip
never replaces it with another, CUDA, build)::

    python3 -m venv --system-site-packages /opt/sheeprl-venv
    python3 -c "import torch; print('torch==' + torch.__version__)" > /tmp/sheeprl-constraints.txt
    /opt/sheeprl-venv/bin/pip install -c /tmp/sheeprl-constraints.txt sheeprl==0.8.4

(this pulls lightning, hydra-core, torchmetrics, tensorboard, opencv-python, moviepy 2, python-dotenv into the venv
only; gymnasium, numpy and torch come from the system site-packages.) Run with the venv's Python::

    /opt/sheeprl-venv/bin/python examples/benchmark_sheeprl.py                       # Pendulum-v1, 2 threads, 3 updates
    /opt/sheeprl-venv/bin/python examples/benchmark_sheeprl.py --env CartPole-v1 --updates 5
    /opt/sheeprl-venv/bin/python examples/benchmark_sheeprl.py --precision bf16-mixed
    /opt/sheeprl-venv/bin/python examples/benchmark_sheeprl.py --override algo.compile.enabled=True  # torch.compile

``--override`` passes any other hydra override to sheeprl's configuration (repeatable).
"""

from __future__ import annotations

import argparse
import platform
import time

import gymnasium as gym
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode


def compose_config(env_id: str, precision: str, batch: int, length: int, horizon: int, overrides: list[str]):
    """sheeprl's own configuration, composed by hydra from the configs packaged with sheeprl."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf
    from sheeprl.utils.utils import dotdict

    with initialize_config_module(config_module="sheeprl.configs", version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "exp=dreamer_v3",
                "algo=dreamer_v3_S",
                "env=gym",
                f"env.id={env_id}",
                "env.num_envs=1",
                "env.capture_video=False",
                "algo.cnn_keys.encoder=[]",
                "algo.cnn_keys.decoder=[]",
                "algo.mlp_keys.encoder=[state]",
                "algo.mlp_keys.decoder=[state]",
                f"algo.per_rank_batch_size={batch}",
                f"algo.per_rank_sequence_length={length}",
                f"algo.horizon={horizon}",
                "fabric.accelerator=cpu",
                "fabric.devices=1",
                f"fabric.precision={precision}",
                "fabric.callbacks=[]",
                "metric.log_level=0",
                "model_manager.disabled=True",
                *overrides,
            ],
        )
    # As sheeprl's CLI (`sheeprl.cli.run`) does
    return dotdict(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))


def random_batch(obs_dim: int, actions_dim: tuple[int, ...], is_continuous: bool, length: int, batch: int, seed: int):
    """A batch as sheeprl's replay buffer gives it (`sample_batches`): float tensors of shape [T, B, ...]."""
    g = torch.Generator().manual_seed(seed)
    if is_continuous:
        actions = torch.rand(length, batch, sum(actions_dim), generator=g) * 2 - 1
    else:
        actions = torch.cat(
            [
                torch.nn.functional.one_hot(torch.randint(0, n, (length, batch), generator=g), n).float()
                for n in actions_dim
            ],
            dim=-1,
        )
    terminated = (torch.rand(length, batch, 1, generator=g) < 0.01).float()
    return {
        "state": torch.randn(length, batch, obs_dim, generator=g),
        "actions": actions,
        "rewards": torch.randn(length, batch, 1, generator=g),
        "terminated": terminated,
        "truncated": torch.zeros(length, batch, 1),
        "is_first": torch.zeros(length, batch, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="Pendulum-v1", help="a gymnasium vector task, e.g. Pendulum-v1, CartPole-v1")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--updates", type=int, default=3, help="timed updates")
    parser.add_argument("--warmup", type=int, default=2, help="untimed updates first")
    parser.add_argument("--batch", type=int, default=16, help="sequences per batch")
    parser.add_argument("--length", type=int, default=64, help="steps per sequence")
    parser.add_argument("--horizon", type=int, default=15, help="imagination horizon")
    parser.add_argument("--precision", default="32-true", help="lightning precision: 32-true or bf16-mixed")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--override", action="append", default=[], help="an extra hydra override for sheeprl")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)

    import hydra
    import lightning
    import sheeprl
    from sheeprl.algos.dreamer_v3.agent import build_agent
    from sheeprl.algos.dreamer_v3.dreamer_v3 import train
    from sheeprl.algos.dreamer_v3.utils import Moments
    from sheeprl.utils.env import make_env
    from sheeprl.utils.metric import MetricAggregator
    from sheeprl.utils.timer import timer
    from torch.distributions import Distribution

    cfg = compose_config(args.env, args.precision, args.batch, args.length, args.horizon, args.override)

    # What `sheeprl.cli.run_algorithm` sets before the algorithm runs (metric.log_level=0: no metrics, no timers)
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    Distribution.set_default_validate_args(cfg.distribution.validate_args)
    MetricAggregator.disabled = True
    timer.disabled = True
    fabric = hydra.utils.instantiate(cfg.fabric, _convert_="all")
    fabric.seed_everything(cfg.seed)

    # The spaces sheeprl's own environment wrappers give (a Dict observation; [-1, 1] continuous actions)
    env = make_env(cfg, cfg.seed, 0, None, "train")()
    observation_space, action_space = env.observation_space, env.action_space
    env.close()
    is_continuous = isinstance(action_space, gym.spaces.Box)
    is_multidiscrete = isinstance(action_space, gym.spaces.MultiDiscrete)
    actions_dim = tuple(
        action_space.shape if is_continuous else (action_space.nvec.tolist() if is_multidiscrete else [action_space.n])
    )

    # Models and optimizers exactly as `sheeprl.algos.dreamer_v3.dreamer_v3.main` builds them
    world_model, actor, critic, target_critic, _player = build_agent(
        fabric, actions_dim, is_continuous, cfg, observation_space
    )
    world_optimizer = hydra.utils.instantiate(
        cfg.algo.world_model.optimizer, params=world_model.parameters(), _convert_="all"
    )
    actor_optimizer = hydra.utils.instantiate(cfg.algo.actor.optimizer, params=actor.parameters(), _convert_="all")
    critic_optimizer = hydra.utils.instantiate(cfg.algo.critic.optimizer, params=critic.parameters(), _convert_="all")
    world_optimizer, actor_optimizer, critic_optimizer = fabric.setup_optimizers(
        world_optimizer, actor_optimizer, critic_optimizer
    )
    moments = Moments(
        cfg.algo.actor.moments.decay,
        cfg.algo.actor.moments.max,
        cfg.algo.actor.moments.percentile.low,
        cfg.algo.actor.moments.percentile.high,
    )
    obs_key = cfg.algo.mlp_keys.encoder[0]
    obs_dim = int(np.prod(observation_space[obs_key].shape))
    gradient_steps = 0

    def update(seed: int) -> None:
        nonlocal gradient_steps
        data = random_batch(obs_dim, actions_dim, is_continuous, args.length, args.batch, seed)
        data[obs_key] = data.pop("state")
        data = {k: v.to(fabric.device) for k, v in data.items()}
        # The EMA of the target critic, as sheeprl's training loop does before every gradient step
        if gradient_steps % cfg.algo.critic.per_rank_target_network_update_freq == 0:
            tau = 1 if gradient_steps == 0 else cfg.algo.critic.tau
            for cp, tcp in zip(critic.module.parameters(), target_critic.parameters()):
                tcp.data.copy_(tau * cp.data + (1 - tau) * tcp.data)
        train(
            fabric,
            world_model,
            actor,
            critic,
            target_critic,
            world_optimizer,
            actor_optimizer,
            critic_optimizer,
            data,
            None,
            cfg,
            is_continuous,
            actions_dim,
            moments,
        )
        gradient_steps += 1

    def n_params(module: torch.nn.Module) -> float:
        return sum(p.numel() for p in module.parameters()) / 1e6

    print(f"sheeprl {sheeprl.__version__}, torch {torch.__version__}, lightning {lightning.__version__}")
    print(
        f"python {platform.python_version()}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, precision {cfg.fabric.precision}, "
        f"compile {bool((cfg.algo.get('compile') or {}).get('enabled', False))}"
    )
    print(
        f"env {cfg.env.id}: obs {observation_space[obs_key].shape}, "
        f"{'continuous' if is_continuous else 'discrete'} actions {tuple(int(d) for d in actions_dim)}; "
        f"objective_mix {cfg.algo.actor.objective_mix} "
        f"({'dynamics backprop' if is_continuous else 'REINFORCE'} by default)"
    )
    wm = cfg.algo.world_model
    print(
        f"algo {cfg.algo.name} S: dense_units {cfg.algo.dense_units}, mlp_layers {cfg.algo.mlp_layers}, "
        f"recurrent_state_size {wm.recurrent_model.recurrent_state_size}, "
        f"stochastic {wm.stochastic_size}x{wm.discrete_size}, hidden {wm.transition_model.hidden_size}, "
        f"bins {wm.reward_model.bins}"
    )
    print(
        f"params (M): world model {n_params(world_model):.2f}, actor {n_params(actor):.2f}, "
        f"critic {n_params(critic):.2f}"
    )
    print(f"batch {args.batch} x {args.length}, horizon {cfg.algo.horizon}")

    for i in range(args.warmup):
        start = time.perf_counter()
        update(args.seed + i)
        print(f"warm-up update {i + 1}: {time.perf_counter() - start:.3f} s", flush=True)

    counter = FlopCounterMode(display=False)
    with counter:
        update(args.seed + 1000)
    flops = counter.get_total_flops()

    times = []
    for i in range(args.updates):
        start = time.perf_counter()
        update(args.seed + 2000 + i)
        times.append(time.perf_counter() - start)
        print(f"update {i + 1}: {times[-1]:.3f} s", flush=True)

    mean, best = float(np.mean(times)), float(np.min(times))
    print(
        f"\nsheeprl {sheeprl.__version__} DreamerV3-S, {cfg.env.id}, {torch.get_num_threads()} threads, "
        f"{cfg.fabric.precision}:"
    )
    print(f"  seconds per update: mean {mean:.3f}, best {best:.3f} (over {args.updates})")
    print(f"  GFLOP per update:   {flops / 1e9:.1f}")
    print(f"  achieved GFLOP/s:   {flops / mean / 1e9:.1f} (mean), {flops / best / 1e9:.1f} (best)")


if __name__ == "__main__":
    main()

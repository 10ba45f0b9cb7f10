"""Compute benchmark (docs/benchmarks.md, section B): update speed, FLOPs, utilisation, latency, memory.

For each size preset, on a vector task (batch 16 x 64, horizon 15 unless overridden):
updates per second, model FLOPs per update (``torch.utils.flop_counter.FlopCounterMode``), the
achieved FLOP/s as a fraction of this machine's float32 and bfloat16 matmul peaks (measured in
the same run), ``predict`` latency for 1 and 8 envs, env steps per second during ``learn`` with
one update every 2 env steps of the measured batch (the constructor's ``train_freq``; the
packaged entries train less often), peak resident memory and replay bytes per stored step. Prints a markdown
table.

    python examples/benchmark_speed.py --configs vector pixels --sizes T XS S --precisions fp32 bf16 --threads 2

``--versions v1 v2 v3`` compares the algorithm versions; ``--sizes paper`` uses each version's own
paper sizes. ``--compile`` instead measures what ``torch.compile`` of the world-model loss (the
observe loop unrolled into one graph) does to the update time, against eager in the same process::

    python examples/benchmark_speed.py --compile --sizes T --precisions bf16 --length 32 --threads 1

``--sheeprl-python`` also times sheeprl 0.8.4's DreamerV3-S update (``examples/benchmark_sheeprl.py``,
run with the Python of the separate venv it documents) on the same task, batch and threads, in the
same run, and prints the speed-up of the size-``S`` vector rows over it::

    python examples/benchmark_speed.py --env CartPole-v1 --configs vector --sizes S --precisions bf16 fp32 \
        --sheeprl-python /opt/sheeprl-venv/bin/python
"""

from __future__ import annotations

import argparse
import itertools
import platform
import re
import resource
import subprocess
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import FakeImageEnv
from torch.utils.flop_counter import FlopCounterMode

from sb3_dreamer import Dreamer, SequenceReplayBuffer


def matmul_peak(dtype: torch.dtype, size: tuple[int, int, int] = (16384, 512, 512), repeats: int = 10) -> float:
    """Achieved FLOP/s of a Dreamer-shaped matmul in ``dtype`` (best of ``repeats``)."""
    n, k, m = size
    a, b = torch.randn(n, k, dtype=dtype), torch.randn(k, m, dtype=dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2.0 * n * k * m / best


def make_env(config: str, env_id: str, pixels_size: int) -> gym.Env:
    """The vector task, or RGB images (SB3's FakeImageEnv, continuous actions) for ``pixels``."""
    if config == "pixels":
        return FakeImageEnv(screen_height=pixels_size, screen_width=pixels_size, n_channels=3, discrete=False)
    return gym.make(env_id)


def bench_size(
    config: str,
    env_id: str,
    pixels_size: int,
    version: str,
    size: str,
    precision: str,
    batch: int,
    length: int,
    updates: int,
) -> dict:
    """Measure one configuration; returns a row of the table."""
    policy_name = "CnnPolicy" if config == "pixels" else "MlpPolicy"
    common = dict(
        version=version,
        model_size=None if size == "paper" else size,
        precision=precision,
        batch_size=batch,
        sequence_length=length,
        seed=0,
        buffer_size=max(10 * length, 1000),
    )
    model = Dreamer(policy_name, make_env(config, env_id, pixels_size), learning_starts=0, gradient_steps=0, **common)
    model.learn(max(2 * length, 256))
    policy, buffer = model.policy, model.replay_buffer
    batches = [buffer.sample(batch) for _ in range(updates + 1)]
    policy.set_training_mode(True)
    policy.train_step(batches[0])
    counter = FlopCounterMode(display=False)
    with counter:
        policy.train_step(batches[0])
    flops = counter.get_total_flops()
    start = time.perf_counter()
    for sample in batches[1:]:
        policy.train_step(sample)
    seconds = (time.perf_counter() - start) / updates

    latencies = {}
    for n_envs in (1, 8):
        obs = np.stack([model.observation_space.sample() for _ in range(n_envs)])
        state, starts = None, np.zeros(n_envs, dtype=bool)
        for _ in range(5):
            _, state = policy.predict(obs, state, starts)
        start = time.perf_counter()
        for _ in range(50):
            _, state = policy.predict(obs, state, starts)
        latencies[n_envs] = (time.perf_counter() - start) / 50 * 1e3

    # env steps per second during learn at the constructor's train_freq (one update every 2 steps)
    vec_env = make_vec_env(lambda: make_env(config, env_id, pixels_size), n_envs=1)
    collector = Dreamer(policy_name, vec_env, learning_starts=length, train_freq=2, **common)
    collector.learn(length + 2)
    start = time.perf_counter()
    steps = 8
    collector.learn(steps, reset_num_timesteps=False)
    env_steps_per_second = steps / (time.perf_counter() - start)
    return dict(
        config=config,
        size=size,
        precision=precision,
        dtype=str(policy.compute_dtype).replace("torch.", ""),
        params_world_model=sum(p.numel() for p in policy.world_model.parameters()),
        seconds_per_update=seconds,
        gflop_per_update=flops / 1e9,
        achieved_gflops=flops / seconds / 1e9,
        predict_ms_1=latencies[1],
        predict_ms_8=latencies[8],
        env_steps_per_second=env_steps_per_second,
        bytes_per_step=SequenceReplayBuffer.bytes_per_step(model.observation_space, model.action_space),
    )


def compile_probe(env_id: str, size: str, precision: str, batch: int, length: int, updates: int) -> str:
    """Seconds per update before and after compiling ``WorldModel.loss``, and the compile time."""
    model = Dreamer(
        "MlpPolicy",
        env_id,
        model_size=size,
        precision=precision,
        batch_size=batch,
        sequence_length=length,
        learning_starts=0,
        gradient_steps=0,
        buffer_size=max(10 * length, 1000),
        seed=0,
    )
    model.learn(max(2 * length, 256))
    policy = model.policy
    batches = [model.replay_buffer.sample(batch) for _ in range(updates + 1)]
    policy.set_training_mode(True)

    def seconds_per_update() -> float:
        policy.train_step(batches[0])
        start = time.perf_counter()
        for sample in batches[1:]:
            policy.train_step(sample)
        return (time.perf_counter() - start) / updates

    eager = seconds_per_update()
    start = time.perf_counter()
    policy.world_model.loss = torch.compile(policy.world_model.loss, dynamic=False)
    policy.train_step(batches[0])
    compile_seconds = time.perf_counter() - start
    compiled = seconds_per_update()
    return (
        f"| {size} | {precision} | {batch} x {length} | {compile_seconds:.0f} s "
        f"| {eager:.3f} | {compiled:.3f} | {eager / compiled:.2f}x |"
    )


#: Lightning precision names of sheeprl for our ``--precisions``.
SHEEPRL_PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed"}


def sheeprl_reference(python: str, env_id: str, precision: str, threads: int, updates: int, batch: int, length: int):
    """Seconds and GFLOP per update of sheeprl's DreamerV3-S, from ``examples/benchmark_sheeprl.py``."""
    script = Path(__file__).with_name("benchmark_sheeprl.py")
    command = [python, str(script), "--env", env_id, "--threads", str(threads), "--updates", str(updates)]
    command += ["--batch", str(batch), "--length", str(length), "--precision", SHEEPRL_PRECISION[precision]]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
    output = result.stdout
    seconds = float(re.search(r"seconds per update: mean ([0-9.]+)", output).group(1))
    gflop = float(re.search(r"GFLOP per update: +([0-9.]+)", output).group(1))
    return seconds, gflop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="Pendulum-v1", help="the vector task")
    parser.add_argument("--configs", nargs="+", default=["vector", "pixels"], choices=["vector", "pixels"])
    parser.add_argument("--pixels-size", type=int, default=64)
    parser.add_argument("--sizes", nargs="+", default=["T", "XS", "S"], help="presets, or 'paper'")
    parser.add_argument("--versions", nargs="+", default=["v3"], choices=["v1", "v2", "v3"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="measure torch.compile of the world-model loss")
    parser.add_argument(
        "--sheeprl-python", default=None, help="Python of a venv with sheeprl 0.8.4: time its S update as the reference"
    )
    args = parser.parse_args()
    if args.sheeprl_python and ("S" not in args.sizes or "vector" not in args.configs or "v3" not in args.versions):
        parser.error("--sheeprl-python compares with the vector v3 S rows: include S, vector and v3")
    if args.sheeprl_python and not set(args.precisions) <= set(SHEEPRL_PRECISION):
        parser.error(f"--sheeprl-python needs --precisions among {sorted(SHEEPRL_PRECISION)}, got {args.precisions}")
    torch.set_num_threads(args.threads)
    if args.compile:
        print(f"torch {torch.__version__}, {args.threads} threads, {args.env}")
        print("| size | precision | batch | compile time | s/update eager | s/update compiled | speed-up |")
        print("|---" * 7 + "|")
        for size, precision in itertools.product(args.sizes, args.precisions):
            print(compile_probe(args.env, size, precision, args.batch, args.length, args.updates), flush=True)
        return
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
        f"{args.env}, batch {args.batch} x {args.length}"
    )
    print(
        f"matmul peak (16384x512 @ 512x512): float32 {peak32 / 1e9:.0f} GFLOP/s, bfloat16 {peak16 / 1e9:.0f} GFLOP/s\n"
    )
    print(
        "| obs | version | size | precision | WM params | s/update | GFLOP/update | GFLOP/s | % fp32 peak | % bf16 peak "
        "| predict 1 env (ms) | predict 8 envs (ms) | env steps/s in learn | buffer B/step |"
    )
    print("|---" * 14 + "|")
    ours: dict[str, float] = {}
    for config, version, size, precision in itertools.product(args.configs, args.versions, args.sizes, args.precisions):
        row = bench_size(
            config, args.env, args.pixels_size, version, size, precision, args.batch, args.length, args.updates
        )
        if (config, version, size) == ("vector", "v3", "S"):
            ours[precision] = row["seconds_per_update"]
        achieved = row["achieved_gflops"] * 1e9
        print(
            f"| {config} | {version} | {size} | {row['dtype']} | {row['params_world_model'] / 1e6:.2f}M "
            f"| {row['seconds_per_update']:.3f} | {row['gflop_per_update']:.1f} | {row['achieved_gflops']:.0f} "
            f"| {100 * achieved / peak32:.0f}% | {100 * achieved / peak16:.0f}% "
            f"| {row['predict_ms_1']:.2f} | {row['predict_ms_8']:.2f} | {row['env_steps_per_second']:.1f} "
            f"| {row['bytes_per_step']} |",
            flush=True,
        )
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak resident memory of the whole run: {peak_rss_mb:.0f} MB")
    if args.sheeprl_python:
        print(
            f"\nsheeprl 0.8.4 DreamerV3-S on {args.env}, same batch and threads, against the vector v3 S rows above\n"
        )
        speedups = "".join(f" speed-up of sb3-dreamer {precision} |" for precision in ours)
        print("| sheeprl precision | s/update | GFLOP/update | GFLOP/s | % fp32 peak |" + speedups)
        print("|---" * (5 + len(ours)) + "|")
        for precision in args.precisions:
            seconds, gflop = sheeprl_reference(
                args.sheeprl_python, args.env, precision, args.threads, args.updates, args.batch, args.length
            )
            ratios = " | ".join(f"{seconds / ours[p]:.2f}x" for p in ours)
            print(
                f"| {SHEEPRL_PRECISION[precision]} | {seconds:.3f} | {gflop:.1f} | {gflop / seconds:.0f} "
                f"| {100 * gflop * 1e9 / seconds / peak32:.0f}% | {ratios} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

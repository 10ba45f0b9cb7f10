"""Sample-efficiency benchmark: Dreamer against zoo-tuned SB3 baselines (docs/benchmarks.md, section A).

Trains every (algorithm, seed) pair on one task for the same number of env steps, evaluating
every ``--eval-freq`` steps with SB3's ``evaluate_policy`` (deterministic, but stochastic for
Atari as in the RL Zoo; separate env); the CSV
also keeps the mean return of the last 5 training episodes (stochastic policy), the measure of the
published DMC curves. Writes one CSV per run, a markdown table and a learning-curve PNG into
``--out``.

Example (what ``docs/benchmarks.md`` reports)::

    python examples/benchmark_sb3.py --env CartPole-v1 --algos dreamer ppo dqn --steps 20000 \
        --dreamer-steps 10000 --jobs 2
    python examples/benchmark_sb3.py --env Pendulum-v1 --algos dreamer sac --steps 10000 --jobs 2

``dreamer`` is DreamerV3 (``sb3_dreamer/hyperparams/dreamer.yml``); ``dreamer_v1`` and
``dreamer_v2`` run their own packaged entry (``dreamer_v1.yml`` / ``dreamer_v2.yml``) where the
env has one, and otherwise V3's entry (size, sequence shape, train ratio) on DreamerV1 /
DreamerV2 with their papers' learning rates and entropy bonus::

    python examples/benchmark_sb3.py --env CartPole-v1 --algos dreamer_v1 dreamer_v2 --steps 10000

Pixel tasks (every ``dm_control/`` and ``ALE/`` id) use the Dreamer preprocessing of
:mod:`sb3_dreamer.envs`; their budgets and the ``steps`` of the CSVs count environment frames
(agent steps times the action repeat)::

    python examples/benchmark_sb3.py --env dm_control/cartpole-balance-v0 --algos dreamer \
        --steps 100000 --eval-freq 10000 --eval-episodes 5 --seeds 0 --jobs 1
    python examples/benchmark_sb3.py --env ALE/Pong-v5 --algos dreamer ppo --steps 300000 --eval-freq 25000 \
        --eval-episodes 3 --seeds 0 --jobs 2

PPO on Pong takes the zoo's ``atari`` entry, with its 4-frame stack (``VecFrameStack``, on the
train and the evaluation env) over the same Dreamer-preprocessed frames.

A run longer than one sitting saves its model and replay buffer after every evaluation
(``--save-models``); the same command with ``--resume`` continues it from there.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import multiprocessing.connection
import os
import platform
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np

THRESHOLDS = {"CartPole-v1": 475.0, "Pendulum-v1": -200.0, "dm_control/cartpole-balance-v0": 800.0}

#: Environment frames per agent step of the pixel tasks by id prefix (every DeepMind Control task
#: from pixels at action repeat 2, every ALE game at frame skip 4).
ACTION_REPEAT = {"dm_control/": 2, "ALE/": 4}


def action_repeat(env_id: str) -> int:
    """Env frames per agent step: the pixel tasks' action repeat, 1 for the others."""
    return next((repeat for prefix, repeat in ACTION_REPEAT.items() if env_id.startswith(prefix)), 1)


#: RL Zoo hyperparameters (rl-baselines3-zoo ``hyperparams/*.yml``) for the baselines.
#: ``n_timesteps`` is the zoo's training budget: schedules (linear learning rate and clip range,
#: DQN's exploration fraction) are laid out over it, as in a zoo run evaluated part-way.
ZOO_BASELINES: dict[tuple[str, str], dict[str, Any]] = {
    ("ppo", "CartPole-v1"): dict(
        n_timesteps=100_000,
        n_envs=8,
        n_steps=32,
        batch_size=256,
        gae_lambda=0.8,
        gamma=0.98,
        n_epochs=20,
        ent_coef=0.0,
        learning_rate=("lin", 0.001),
        clip_range=("lin", 0.2),
    ),
    ("dqn", "CartPole-v1"): dict(
        n_timesteps=50_000,
        learning_rate=2.3e-3,
        batch_size=64,
        buffer_size=100000,
        learning_starts=1000,
        gamma=0.99,
        target_update_interval=10,
        train_freq=256,
        gradient_steps=128,
        exploration_fraction=0.16,
        exploration_final_eps=0.04,
        policy_kwargs=dict(net_arch=[256, 256]),
    ),
    ("sac", "Pendulum-v1"): dict(n_timesteps=20_000, learning_rate=1e-3),
    # the zoo's atari entry (its AtariWrapper replaced by the Dreamer preprocessing of make_env)
    ("ppo", "ALE/Pong-v5"): dict(
        n_timesteps=10_000_000,
        frame_stack=4,
        n_envs=8,
        n_steps=128,
        n_epochs=4,
        batch_size=256,
        learning_rate=("lin", 2.5e-4),
        clip_range=("lin", 0.1),
        vf_coef=0.5,
        ent_coef=0.01,
    ),
    # The zoo has no pixel-DMC entry: SB3's SAC defaults with a replay buffer that fits in RAM.
    ("sac", "dm_control/cartpole-balance-v0"): dict(n_timesteps=50_000, buffer_size=100_000, learning_starts=2500),
}


def make_env(env_id: str) -> gym.Env:
    """One env of ``env_id``; the pixel tasks get the Dreamer preprocessing."""
    from sb3_dreamer.envs import make_atari_env, make_dmc_env

    if env_id.startswith("dm_control/"):
        return make_dmc_env(env_id.removeprefix("dm_control/").removesuffix("-v0"), observation="pixels")
    if env_id.startswith("ALE/"):
        return make_atari_env(env_id.removeprefix("ALE/").removesuffix("-v5"))
    return gym.make(env_id)


def make_train_env(env_id: str, n_envs: int, seed: int, frame_stack: int = 0):
    """``n_envs`` monitored copies of :func:`make_env` in a ``DummyVecEnv``, with the last
    ``frame_stack`` observations stacked (``VecFrameStack``) if it is above 0."""
    from functools import partial

    from stable_baselines3.common.vec_env import VecFrameStack

    from sb3_dreamer.envs import make_vec_dreamer_env

    env = make_vec_dreamer_env(partial(make_env, env_id), n_envs=n_envs, seed=seed)
    return VecFrameStack(env, frame_stack) if frame_stack > 0 else env


def make_eval_env(algo: str, env_id: str, seed: int):
    """The evaluation env of ``algo`` on ``env_id``: one monitored :func:`make_env` seeded with
    ``seed``; a one-env ``VecFrameStack`` where the baseline's zoo entry stacks frames."""
    from stable_baselines3.common.monitor import Monitor

    frame_stack = ZOO_BASELINES.get((algo, env_id), {}).get("frame_stack", 0)
    if frame_stack > 0:
        return make_train_env(env_id, 1, seed, frame_stack)  # seeded: the first reset uses it
    env = Monitor(make_env(env_id))
    env.reset(seed=seed)
    return env


def deterministic_eval(env_id: str) -> bool:
    """Deterministic evaluation, but for Atari, which the RL Zoo evaluates stochastically (a
    deterministic Atari policy can get stuck, e.g. never serve)."""
    return not env_id.startswith("ALE/")


def policy_name(env_id: str) -> str:
    """``CnnPolicy`` for the pixel tasks, ``MlpPolicy`` otherwise."""
    return "CnnPolicy" if action_repeat(env_id) > 1 else "MlpPolicy"


def _linear(start: float, budget_fraction: float):
    """Zoo ``lin_<start>`` schedule over the zoo budget, for a run of ``budget_fraction`` of it."""
    return lambda progress_remaining: start * (1.0 - (1.0 - progress_remaining) * budget_fraction)


def make_model(algo: str, env_id: str, seed: int, total_steps: int, dreamer_kwargs: dict[str, Any] | None = None):
    """Build the model of ``algo`` for ``env_id`` with the shipped / zoo hyperparameters;
    ``dreamer_kwargs`` override the packaged Dreamer entry (its ``hyperparams`` dict is merged)."""
    from stable_baselines3 import DQN, PPO, SAC

    if algo.startswith("dreamer"):
        from sb3_dreamer import Dreamer
        from sb3_dreamer.hyperparams import has_section, load_hyperparams, with_overrides

        # rl_zoo3's convention: one "atari" section for every ALE game
        section = "atari" if env_id.startswith("ALE/") else env_id
        if has_section(section, algo):
            # "dreamer" is V3's dreamer.yml; "dreamer_v1" / "dreamer_v2" use their own packaged
            # entry (dreamer_v1.yml / dreamer_v2.yml) where there is one
            kwargs = load_hyperparams(section, algo=algo)
            if kwargs.get("policy", policy_name(env_id)) != policy_name(env_id):
                # e.g. dm_control/walker-walk-v0's entry is for proprioception; every dm_control id runs from pixels here
                raise ValueError(
                    f"the packaged {algo} entry of {env_id} is written for {kwargs['policy']}, this benchmark "
                    f"runs {env_id} with {policy_name(env_id)} (pixels for every dm_control/ and ALE/ id)"
                )
        else:
            # otherwise V3's entry (the same sizes, sequence shape and train ratio) with that
            # version's own (paper) optimiser settings and entropy bonus: the packaged learning
            # rates and entropy are tuned for V3's normalised returns
            kwargs = load_hyperparams(section)
            kwargs["hyperparams"] = {
                key: value for key, value in kwargs.get("hyperparams", {}).items() if not key.endswith("_lr")
            }
            kwargs.pop("ent_coef", None)
        kwargs["version"] = algo.partition("_")[2] or "v3"
        kwargs = with_overrides(kwargs, dreamer_kwargs or {})
        n_envs = kwargs.pop("n_envs", 1)
        kwargs.pop("n_timesteps", None)
        kwargs.pop("policy", None)
        return Dreamer(policy_name(env_id), make_train_env(env_id, n_envs, seed), seed=seed, **kwargs)
    kwargs = dict(ZOO_BASELINES[(algo, env_id)])
    n_envs = kwargs.pop("n_envs", 1)
    frame_stack = kwargs.pop("frame_stack", 0)
    budget_fraction = total_steps / kwargs.pop("n_timesteps")
    for key, value in list(kwargs.items()):
        if isinstance(value, tuple) and value[0] == "lin":
            kwargs[key] = _linear(value[1], budget_fraction)
    if "exploration_fraction" in kwargs:
        kwargs["exploration_fraction"] = min(1.0, kwargs["exploration_fraction"] / budget_fraction)
    cls = {"ppo": PPO, "dqn": DQN, "sac": SAC}[algo]
    return cls(policy_name(env_id), make_train_env(env_id, n_envs, seed, frame_stack), seed=seed, **kwargs)


#: the columns of a run's CSV
CSV_COLUMNS = ["algo", "env", "seed", "steps", "mean", "std", "train_return", "wall_seconds"]

#: one run: algo, env id, seed, env steps, eval frequency, eval episodes, output folder, tag,
#: Dreamer kwargs, threads, save the model, resume
Job = tuple[str, str, int, int, int, int, str, str, dict[str, Any], int, bool, bool]


def file_stem(env_id: str) -> str:
    """``env_id`` as a file name (``dm_control/cartpole-balance-v0`` -> ``dm_control-cartpole-balance-v0``)."""
    return env_id.replace("/", "-")


def run_one(job: Job) -> str:
    """Train one (algo, env, seed) run and write its evaluation CSV; returns the CSV path.

    The run is labelled ``algo + tag`` in its CSV name and rows (a tagged Dreamer variant). With
    ``save_model`` the model is saved beside the CSV (same name, ``.zip``) after every evaluation,
    with its replay buffer (``_buffer.pkl``) for the off-policy algorithms, so that a stopped run
    leaves its latest agent (for ``examples/diagnose_dmc_cartpole.py``) and can be continued. With
    ``resume`` a run whose CSV is there continues from its last evaluation (``load`` +
    ``load_replay_buffer`` + ``learn(reset_num_timesteps=False)``; a CSV without its model or
    buffer is an error); the saved model's settings are kept, whatever the packaged entry or
    ``dreamer_kwargs`` say now. Its CSV keeps the earlier rows and its ``wall_seconds`` (which
    leave out the time spent saving) go on from the last of them. The continued run is not
    bit-identical to an uninterrupted one: the train and eval envs restart from fresh episodes
    (seeded by the step count), and the model and buffer were saved inside the
    step of the last evaluation, before that step was stored and before the update after it."""
    algo, env_id, seed, total_steps, eval_freq, eval_episodes, out, tag, dreamer_kwargs, threads, save_model, resume = (
        job
    )
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy

    torch.set_num_threads(threads)
    repeat = action_repeat(env_id)
    total_steps //= repeat
    eval_freq //= repeat
    model = make_model(algo, env_id, seed, total_steps, dreamer_kwargs)
    label = algo + tag
    path = Path(out) / f"{file_stem(env_id)}_{label}_seed{seed}.csv"
    model_path = path.with_suffix(".zip")
    buffer_path = path.with_name(path.stem + "_buffer.pkl")
    rows: list[dict[str, Any]] = []
    elapsed_before = 0.0
    if resume and path.exists():
        if not model_path.exists():
            raise FileNotFoundError(f"cannot resume {path.name}: its model {model_path} is missing")
        with open(path) as handle:
            rows = list(csv.DictReader(handle))
        # the fresh model only supplies the class and the train env (with the entry's n_envs)
        model = type(model).load(model_path, env=model.get_env())
        if hasattr(model, "load_replay_buffer"):
            if not buffer_path.exists():
                raise FileNotFoundError(f"cannot resume {path.name}: its replay buffer {buffer_path} is missing")
            model.load_replay_buffer(buffer_path)
        # SB3's load seeds the train env with the run's seed (a run's first episodes again; Dreamer's
        # load derives the seed from the step count): one rule for every algorithm here
        model.get_env().seed(seed + model.num_timesteps)
        elapsed_before = float(rows[-1]["wall_seconds"])
        last_eval = int(rows[-1]["steps"]) // repeat
        # an evaluation runs at the first step count at or past its target: with n_envs > 1 the
        # model may be up to n_envs - 1 steps past the step the CSV records
        if not 0 <= model.num_timesteps - last_eval < model.n_envs:
            raise ValueError(
                f"{model_path} is at {model.num_timesteps * repeat} env steps, {path} at {rows[-1]['steps']}"
            )
        print(f"[{label} {env_id} seed {seed}] resuming at {rows[-1]['steps']} env steps", flush=True)
    eval_env = make_eval_env(algo, env_id, 10_000 + seed + model.num_timesteps)
    next_eval = (int(rows[-1]["steps"]) // repeat if rows else 0) + eval_freq
    start = time.perf_counter() - elapsed_before
    saving_seconds = 0.0  # time spent saving, left out of the wall-clock

    def write_rows() -> None:
        """Rewrite the CSV after every evaluation, so that a long run leaves a partial curve;
        through a temporary file, so that a run stopped while writing keeps the previous rows."""
        partial = path.with_name(path.name + ".partial")  # not *.csv: summarise must not read it
        with open(partial, "w", newline="") as handle:
            # every column, whatever the rows read back hold (older CSVs have no train_return)
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, restval="")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(partial, path)

    def evaluate(steps: int) -> None:
        mean, std = evaluate_policy(
            model, eval_env, n_eval_episodes=eval_episodes, deterministic=deterministic_eval(env_id)
        )
        rows.append(
            dict(
                algo=label,
                env=env_id,
                seed=seed,
                steps=steps * repeat,
                mean=mean,
                std=std,
                # the published DMC curves are training-episode returns (stochastic policy)
                train_return=np.mean([info["r"] for info in list(model.ep_info_buffer)[-5:]] or [np.nan]),
                wall_seconds=round(time.perf_counter() - start - saving_seconds, 1),
            )
        )
        if save_model:
            save(model)
        write_rows()  # last: a CSV row is only written once the model and buffer it names are
        print(
            f"[{label} {env_id} seed {seed}] {steps * repeat} env steps: {mean:.1f} +- {std:.1f} ({rows[-1]['wall_seconds']} s)",
            flush=True,
        )

    def save(trained: Any) -> None:
        """Save the model and (off-policy) its replay buffer, each through a temporary file, so that
        a run stopped while saving keeps the previous pair."""
        nonlocal saving_seconds
        began = time.perf_counter()
        staged = {model_path: model_path.with_suffix(".partial.zip")}
        trained.save(staged[model_path])
        if hasattr(trained, "save_replay_buffer"):
            staged[buffer_path] = buffer_path.with_suffix(".partial.pkl")
            trained.save_replay_buffer(staged[buffer_path])
        for final, partial in staged.items():
            os.replace(partial, final)
        saving_seconds += time.perf_counter() - began

    class EvalEvery(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next_eval = next_eval

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next_eval:
                evaluate(self.next_eval)
                self.next_eval += eval_freq
            return True

    if model.num_timesteps < total_steps:
        model.learn(total_steps - model.num_timesteps, callback=EvalEvery(), reset_num_timesteps=not rows)
    return str(path)


def run_name(job: Job) -> str:
    algo, env_id, seed, *_, tag = job[:8]
    return f"{algo}{tag} {env_id} seed {seed}"


def run_in_process(job: Job) -> None:
    """A worker process's body: :func:`run_one`, its failure printed and its exit code 1."""
    try:
        print("wrote", run_one(job), flush=True)
    except Exception:  # noqa: BLE001 (any failure of one run is reported, the others go on)
        print(f"FAILED {run_name(job)}:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        sys.exit(1)


def exit_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM as ``SystemExit``, so that a plain ``kill`` unwinds like Ctrl-C does."""
    sys.exit(128 + signum)


def run_jobs(jobs: list[Job], parallel: int, target: Callable[[Job], None] = run_in_process) -> list[str]:
    """Run ``target`` on ``jobs``, ``parallel`` at a time, each in its own spawned process; returns
    the names of the runs that failed or whose process died (e.g. killed for memory), which do not
    stop the others. Leaving early (an exception, Ctrl-C, or SIGTERM, turned into ``SystemExit``
    meanwhile) terminates the running workers rather than leaving them to finish alone."""
    context = mp.get_context("spawn")
    pending, running, failed = list(jobs), {}, []
    previous_handler = signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        while pending or running:
            while pending and len(running) < parallel:
                job = pending.pop(0)
                process = context.Process(target=target, args=(job,))
                process.start()
                running[process] = job
            mp.connection.wait([process.sentinel for process in running])
            for process in [process for process in running if not process.is_alive()]:
                job = running.pop(process)
                process.join()
                if process.exitcode != 0:
                    failed.append(run_name(job))
                    if process.exitcode != 1:  # not a reported exception: killed by a signal or crashed
                        print(f"FAILED {run_name(job)}: exit code {process.exitcode}", file=sys.stderr, flush=True)
    finally:
        for process in running:
            process.terminate()
        for process in running:
            process.join()
        signal.signal(signal.SIGTERM, previous_handler)
    return failed


def summarise(out: Path, env_id: str, algos: list[str], plot_suffix: str = "") -> str:
    """Markdown table (mean ± std over seeds per budget, steps to threshold) and a PNG plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = []
    threshold = THRESHOLDS.get(env_id)
    fig, ax = plt.subplots(figsize=(6, 4))
    table: dict[str, dict[int, list[float]]] = {}
    reach: dict[str, list[str]] = {}
    wall: dict[str, list[float]] = {}
    for algo in algos:
        curves: dict[int, list[float]] = {}
        reach[algo], wall[algo] = [], []
        paths = out.glob(f"{file_stem(env_id)}_{algo}_seed*.csv")
        for path in sorted(paths, key=lambda path: int(path.stem.rpartition("_seed")[2])):
            with open(path) as handle:
                rows = list(csv.DictReader(handle))
            reached = [int(r["steps"]) for r in rows if threshold is not None and float(r["mean"]) >= threshold]
            hit = reached[0] if reached else None
            reach[algo].append("-" if hit is None else str(hit))
            wall[algo].append(float(rows[-1]["wall_seconds"]))
            for row in rows:
                curves.setdefault(int(row["steps"]), []).append(float(row["mean"]))
        if not curves:
            continue
        table[algo] = curves
        steps = sorted(curves)
        means = np.array([np.mean(curves[s]) for s in steps])
        stds = np.array([np.std(curves[s]) for s in steps])
        first, last = len(curves[steps[0]]), len(curves[steps[-1]])
        # runs stopped early leave fewer seeds at the larger budgets
        seeds = f"{first} seeds" if first == last else f"{first} seeds, {last} at {steps[-1] / 1000:g}k"
        ax.plot(steps, means, label=f"{algo} ({seeds})")
        ax.fill_between(steps, means - stds, means + stds, alpha=0.2)
    if threshold is not None:
        ax.axhline(threshold, color="gray", linestyle="--", linewidth=1, label="threshold")
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"mean eval return ({'deterministic' if deterministic_eval(env_id) else 'stochastic'})")
    ax.set_title(env_id)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"{file_stem(env_id)}{plot_suffix}.png", dpi=100)
    if not table:
        return f"no CSVs of {env_id} for {', '.join(algos)} in {out}"
    budgets = sorted({s for curves in table.values() for s in curves})
    stride = 2000 if budgets[-1] >= 10_000 else 1
    shown = [b for b in budgets if b % stride == 0 or b == budgets[-1]]
    header = " | ".join(f"{b / 1000:g}k" for b in shown)
    lines.append(f"| algo | {header} | steps to threshold (per seed) | wall-clock per run |")
    lines.append("|---" * (len(shown) + 3) + "|")
    for algo, curves in table.items():
        cells = [f"{np.mean(curves[b]):.0f} ± {np.std(curves[b]):.0f}" if b in curves else "" for b in shown]
        lines.append(
            f"| {algo} | " + " | ".join(cells) + f" | {', '.join(reach[algo])} | {np.mean(wall[algo]) / 60:.1f} min |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--algos", nargs="+", default=["dreamer", "ppo"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=10_000)

    parser.add_argument("--dreamer-steps", type=int, default=None, help="Dreamer's budget, if not --steps")
    parser.add_argument("--eval-freq", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run")
    parser.add_argument("--out", default="docs/results")
    parser.add_argument("--summary-only", action="store_true", help="only rebuild the table and plot")
    parser.add_argument("--plot-suffix", default="", help="appended to the PNG's name, e.g. _versions")
    parser.add_argument(
        "--dreamer-kwargs",
        type=json.loads,
        default={},
        help='JSON overrides of the packaged Dreamer entry, e.g. \'{"train_freq": 2, "hyperparams": {"actor_lr": 1e-4}}\'',
    )
    parser.add_argument("--tag", default="", help="appended to the Dreamer runs' names, e.g. _r512 (a variant)")
    parser.add_argument(
        "--save-models",
        action="store_true",
        help="save each model (.zip) and replay buffer (_buffer.pkl) beside its CSV after every evaluation",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue each run from the model and replay buffer --save-models left (implies --save-models)",
    )
    args = parser.parse_args()
    tags = {algo: args.tag if algo.startswith("dreamer") else "" for algo in args.algos}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        jobs = [
            (
                algo,
                args.env,
                seed,
                steps,
                args.eval_freq,
                args.eval_episodes,
                str(out),
                tags[algo],
                args.dreamer_kwargs,
                args.threads,
                args.save_models or args.resume,
                args.resume,
            )
            for algo in args.algos
            for seed in args.seeds
            for steps in [args.dreamer_steps if algo.startswith("dreamer") and args.dreamer_steps else args.steps]
        ]
        failed = run_jobs(jobs, args.jobs)
        print(
            f"\n{args.env} on {platform.processor() or platform.machine()}, {args.jobs} runs side by side, "
            f"{args.threads} thread(s) each\n"
        )
    # a tagged variant gets its own plot instead of replacing the task's main one
    plot_suffix = args.plot_suffix or args.tag
    print(summarise(out, args.env, [algo + tags[algo] for algo in args.algos], plot_suffix))
    if not args.summary_only and failed:
        raise SystemExit(f"{len(failed)} run(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()

"""Dreamer in the RL Baselines3 Zoo: ``python -m sb3_dreamer.zoo <command> [zoo arguments]``.

The commands run rl_zoo3's own scripts after adding ``dreamer`` (DreamerV3), ``dreamer_v2`` and
``dreamer_v1`` to its algorithm table (``rl_zoo3.utils.ALGOS``) and its hyperparameter sampler and
converter tables (``rl_zoo3.hyperparams_opt``). ``--algo`` defaults to ``dreamer`` and, for these
three, ``--conf-file`` to the packaged ``sb3_dreamer/hyperparams/<algo>.yml`` (whose sections set
``version``).

- ``train``: ``rl_zoo3.train`` (log folder ``<-f>/dreamer/<env>_<n>/``)
- ``optimize``: ``rl_zoo3.train --optimize-hyperparameters`` with :func:`sample_dreamer_params`
- ``enjoy``: ``rl_zoo3.enjoy``; it passes ``state`` and ``episode_start`` to ``predict``, which
  carries the RSSM state across steps
- ``record_video``: ``rl_zoo3.record_video``, with the ``env_kwargs`` saved in the run's
  ``config.yml`` as ``enjoy`` uses them (rl_zoo3's own script reads only ``--env-kwargs``)
- ``plot``: ``rl_zoo3.plots.plot_train``; ``--output FILE`` saves the figure instead of showing it

Needs the ``zoo`` extra: ``pip install 'sb3-dreamer[zoo]'``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import runpy
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sb3_dreamer.hyperparams import ALGO_FILES, hyperparams_path

if TYPE_CHECKING:
    import optuna

ALGO_NAME = "dreamer"
#: Every algorithm name registered with rl_zoo3; each is :class:`~sb3_dreamer.Dreamer` with its own
#: packaged hyperparameter file (:data:`sb3_dreamer.hyperparams.ALGO_FILES`).
ALGO_NAMES = tuple(ALGO_FILES)
COMMANDS = ("train", "optimize", "enjoy", "record_video", "plot")
#: Sequences per update of every sampled configuration; the train ratio sets ``train_freq``.
SAMPLED_BATCH_SIZE = 16


def _require_zoo() -> None:
    try:
        import rl_zoo3  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "python -m sb3_dreamer.zoo needs rl_zoo3, which is not installed: pip install 'sb3-dreamer[zoo]'"
        ) from error


def register() -> None:
    """Add Dreamer to rl_zoo3's algorithm, sampler and converter tables, build the zoo's
    evaluation env with the hyperparameter file's ``env_kwargs`` (:func:`_eval_env_uses_file_env_kwargs`),
    and register the DeepMind Control envs of shimmy (``dm_control/<domain>-<task>-v0``) when
    shimmy is installed.

    :raises ImportError: if rl_zoo3 is not installed (the message says how to install it)
    """
    _require_zoo()
    import gymnasium as gym
    from rl_zoo3 import hyperparams_opt
    from rl_zoo3.utils import ALGOS

    _eval_env_uses_file_env_kwargs()

    # Sets MUJOCO_GL=egl (headless pixels) before anything imports mujoco.
    import sb3_dreamer.envs  # noqa: F401
    from sb3_dreamer import Dreamer

    for name in ALGO_NAMES:
        ALGOS[name] = Dreamer
        hyperparams_opt.HYPERPARAMS_SAMPLER[name] = sample_dreamer_params
        hyperparams_opt.HYPERPARAMS_CONVERTER[name] = convert_dreamer_params
    try:
        import shimmy
    except ImportError:
        return
    gym.register_envs(shimmy)


def _eval_env_uses_file_env_kwargs() -> None:
    """Make rl_zoo3's ``ExperimentManager`` build its evaluation env with the ``env_kwargs`` of the
    hyperparameter file when ``--eval-env-kwargs`` is not given (idempotent).

    rl_zoo3 2.x copies the training env's kwargs to the evaluation env only when they come from
    ``--env-kwargs``; with the packaged Atari and pixel DeepMind Control sections the evaluation
    env was built without ``frameskip: 1`` or the render settings, and their wrappers refused it
    before training started. The patch holds for every algorithm the process runs after
    :func:`register`, as the fix of rl_zoo3's behaviour it is.
    """
    from rl_zoo3.exp_manager import ExperimentManager

    original = ExperimentManager._preprocess_hyperparams
    if getattr(original, "sb3_dreamer_eval_env_kwargs", False):
        return

    @functools.wraps(original)
    def preprocess(self: ExperimentManager, hyperparams: dict[str, Any]) -> Any:
        result = original(self, hyperparams)
        # rl_zoo3 2.9 keeps --eval-env-kwargs in a private attribute; should it go, the kwargs
        # it built (empty unless given) tell the same
        given = getattr(self, "_eval_env_kwargs_args", self.eval_env_kwargs or None)
        if given is None:
            self.eval_env_kwargs = self.env_kwargs
        return result

    preprocess.sb3_dreamer_eval_env_kwargs = True  # type: ignore[attr-defined]
    ExperimentManager._preprocess_hyperparams = preprocess  # type: ignore[method-assign]


@contextlib.contextmanager
def _test_env_with_saved_env_kwargs() -> Iterator[None]:
    """While active, rl_zoo3's ``create_test_env`` starts from the ``env_kwargs`` saved in the
    run's ``config.yml`` (the hyperparameter file's), as ``enjoy`` does; ``record_video`` passes
    only those of ``--env-kwargs`` (and of ``args.yml``), which override them."""
    from rl_zoo3 import utils

    original = utils.create_test_env

    @functools.wraps(original)
    def create_test_env(*args: Any, hyperparams: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        saved = dict((hyperparams or {}).get("env_kwargs") or {})
        kwargs["env_kwargs"] = {**saved, **(kwargs.get("env_kwargs") or {})}
        return original(*args, hyperparams=hyperparams, **kwargs)

    utils.create_test_env = create_test_env
    try:
        yield
    finally:
        utils.create_test_env = original


def train_schedule(train_ratio: float, replayed_per_update: int, n_envs: int = 1) -> tuple[int, int]:
    """``(train_freq, gradient_steps)`` closest to a train ratio (replayed steps per env step).

    :param train_ratio: target ``batch_size * sequence_length * gradient_steps / (train_freq * n_envs)``
    :param replayed_per_update: ``batch_size * sequence_length``
    :param n_envs: parallel envs (``train_freq`` counts vec-env steps)
    """
    if train_ratio <= 0:
        raise ValueError(f"train_ratio must be positive, got {train_ratio!r}")
    per_vec_step = train_ratio * n_envs  # replayed steps wanted per vec-env step

    def error(schedule: tuple[int, int]) -> float:
        train_freq, gradient_steps = schedule
        return abs(math.log(gradient_steps * replayed_per_update / (train_freq * per_vec_step)))

    # the (train_freq, gradient_steps) closest to the ratio, the smallest train_freq among equals
    # (e.g. 3 envs at ratio 256 with 512 steps an update: 3 updates every 2 vec-env steps)
    candidates = [(freq, max(1, round(per_vec_step * freq / replayed_per_update))) for freq in range(1, 65)]
    return min(candidates, key=lambda schedule: (round(error(schedule), 9), schedule[0]))


def convert_dreamer_params(params: dict[str, Any]) -> dict[str, Any]:
    """Dreamer constructor arguments from the raw values of :func:`sample_dreamer_params`
    (``rl_zoo3`` also uses it to load a stored trial with ``--trial-id``, passing only the trial's
    values; so the number of envs the trial ran with is one of them, ``n_envs``, 1 if absent)."""
    train_freq, gradient_steps = train_schedule(
        params["train_ratio"], SAMPLED_BATCH_SIZE * params["sequence_length"], params.get("n_envs", 1)
    )
    return {
        "model_size": params["model_size"],
        "batch_size": SAMPLED_BATCH_SIZE,
        "sequence_length": params["sequence_length"],
        "train_freq": train_freq,
        "gradient_steps": gradient_steps,
        "learning_rate": params["model_lr"],
        "actor_learning_rate": params["actor_lr"],
        "critic_learning_rate": params["critic_lr"],
        "imagination_horizon": params["horizon"],
        "ent_coef": params["ent_coef"],
    }


def sample_dreamer_params(
    trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]
) -> dict[str, Any]:
    """rl_zoo3 sampler for Dreamer: the three learning rates, the train ratio, the model size,
    the imagination horizon and the actor's entropy bonus.

    :param trial: the Optuna trial to sample from
    :param n_actions: action dimension (unused: Dreamer needs no action noise)
    :param n_envs: parallel training envs, for the train ratio
    :param additional_args: rl_zoo3's extra sampler arguments (unused)
    :return: Dreamer constructor arguments
    """
    params = {
        "model_size": trial.suggest_categorical("model_size", ["T", "XS", "S"]),
        "sequence_length": trial.suggest_categorical("sequence_length", [32, 64]),
        "train_ratio": trial.suggest_categorical("train_ratio", [32, 64, 128, 256, 512]),
        "model_lr": trial.suggest_float("model_lr", 1e-5, 1e-3, log=True),
        "actor_lr": trial.suggest_float("actor_lr", 1e-5, 1e-3, log=True),
        "critic_lr": trial.suggest_float("critic_lr", 1e-5, 1e-3, log=True),
        "horizon": trial.suggest_categorical("horizon", [8, 15, 25]),
        "ent_coef": trial.suggest_float("ent_coef", 1e-4, 1e-2, log=True),
        # not tuned: recorded with the trial so that loading it rebuilds the same schedule
        "n_envs": trial.suggest_categorical("n_envs", [n_envs]),
    }
    return convert_dreamer_params(params)


def with_defaults(args: Sequence[str], conf_file: bool) -> list[str]:
    """``args`` with ``--algo dreamer`` added if no ``--algo`` is given and, if ``conf_file`` and
    the algorithm is one of :data:`ALGO_NAMES`, ``--conf-file`` pointing at its packaged file.
    Abbreviated options count, as rl_zoo3's parser accepts them (``--al``, ``--conf``)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-a", "--algo")
    parser.add_argument("-conf", "--conf-file")
    known, _ = parser.parse_known_args(list(args))
    result = list(args)
    if known.algo is None:
        result += ["--algo", ALGO_NAME]
    algo = known.algo or ALGO_NAME
    if conf_file and known.conf_file is None and algo in ALGO_NAMES:
        result += ["--conf-file", str(hyperparams_path(algo))]
    return result


def _run_script(script: Callable[[], Any], prog: str, args: Sequence[str]) -> None:
    """Run an rl_zoo3 script, which parses ``sys.argv``, on ``args``."""
    saved = sys.argv
    sys.argv = [prog, *args]
    try:
        script()
    finally:
        sys.argv = saved


def _folder_env_names(args: Sequence[str]) -> list[str]:
    """``args`` with the env ids after ``-e`` / ``--env`` written as rl_zoo3 names run folders
    (its ``EnvironmentName``: ``dm_control/cartpole-balance-v0`` -> ``dm_control-cartpole-balance-v0``):
    ``plot_train`` matches the ids against folder names."""
    from rl_zoo3.utils import EnvironmentName

    result, in_envs = [], False
    for arg in args:
        if arg in ("-e", "--env"):
            in_envs = True
        elif arg.startswith("-"):
            in_envs = False
        elif in_envs:
            arg = str(EnvironmentName(arg))
        result.append(arg)
    return result


def plot(args: Sequence[str]) -> None:
    """rl_zoo3's ``plot_train`` on ``args``; ``--output FILE`` saves the figure (headless) instead
    of showing it."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("-o", "--output")
    known, rest = parser.parse_known_args(list(args))
    import matplotlib

    if known.output:
        matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from rl_zoo3.plots.plot_train import plot_train

    _run_script(plot_train, "sb3_dreamer.zoo plot", with_defaults(_folder_env_names(rest), conf_file=False))
    if known.output:
        figure = plt.gcf()
        if not any(axis.lines for axis in figure.axes):
            print("No curve drawn: no run has at least --episode-window (default 100) episodes", file=sys.stderr)
        figure.savefig(known.output)
        print(f"Saved {known.output}")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m sb3_dreamer.zoo``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        print(f"usage: python -m sb3_dreamer.zoo {{{','.join(COMMANDS)}}} [rl_zoo3 arguments]", file=sys.stderr)
        raise SystemExit(2)
    command, rest = args[0], args[1:]
    register()
    prog = f"sb3_dreamer.zoo {command}"
    if command in ("train", "optimize"):
        from rl_zoo3.train import train

        rest = with_defaults(rest, conf_file=True)
        if command == "optimize" and not {"-optimize", "--optimize-hyperparameters"} & set(rest):
            rest.append("--optimize-hyperparameters")
        _run_script(train, prog, rest)
    elif command == "enjoy":
        from rl_zoo3.enjoy import enjoy

        _run_script(enjoy, prog, with_defaults(rest, conf_file=False))
    elif command == "record_video":
        # rl_zoo3's record_video is a script body under ``if __name__ == "__main__"``, not a function.
        def record_video() -> None:
            with _test_env_with_saved_env_kwargs():
                runpy.run_module("rl_zoo3.record_video", run_name="__main__")

        _run_script(record_video, prog, with_defaults(rest, conf_file=False))
    else:
        plot(rest)


if __name__ == "__main__":
    main()

"""``python -m sb3_dreamer.zoo``: Dreamer trained, replayed, tuned and plotted by rl_zoo3's own scripts."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sb3_dreamer.hyperparams import hyperparams_path
from sb3_dreamer.zoo import convert_dreamer_params, sample_dreamer_params, train_schedule, with_defaults

requires_zoo = pytest.mark.skipif(
    importlib.util.find_spec("rl_zoo3") is None, reason="rl_zoo3 is not installed (pip install 'sb3-dreamer[zoo]')"
)

#: A tiny CartPole run: a few updates of the smallest model.
TINY = ["--hyperparams", "model_size:'tiny'", "learning_starts:100", "train_freq:20"]


def zoo(*args: str, cwd: Path, timeout: int = 600) -> str:
    """Run ``python -m sb3_dreamer.zoo`` in ``cwd`` on one torch thread; return its stdout and stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, "-m", "sb3_dreamer.zoo", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@requires_zoo
def test_train_enjoy_record_video_and_plot_write_the_zoo_files(tmp_path):
    zoo("train", "--env", "CartPole-v1", "-n", "300", "--num-threads", "1", "--seed", "0", *TINY, cwd=tmp_path)
    run = tmp_path / "logs" / "dreamer" / "CartPole-v1_1"
    assert (run / "CartPole-v1.zip").is_file()
    assert (run / "0.monitor.csv").is_file()
    config = (run / "CartPole-v1" / "config.yml").read_text()
    assert "tiny" in config and "sequence_length" in config  # packaged section + command-line override

    out = zoo("enjoy", "--env", "CartPole-v1", "-f", "logs", "-n", "300", "--no-render", cwd=tmp_path)
    assert "Episodes" in out and "Mean reward" in out

    out = zoo("record_video", "--env", "CartPole-v1", "-f", "logs", "-n", "50", "-o", "videos", cwd=tmp_path)
    assert list((tmp_path / "videos").glob("*.mp4")), out

    out = zoo("plot", "--env", "CartPole-v1", "-f", "logs", "-w", "1", "--output", "curve.png", cwd=tmp_path)
    assert (tmp_path / "curve.png").stat().st_size > 0
    assert "No curve drawn" not in out


@requires_zoo
def test_atari_section_evaluates_and_records_with_its_env_kwargs(tmp_path):
    """The packaged ``atari`` section builds ALE with ``frameskip: 1`` (the wrapper skips frames);
    rl_zoo3's evaluation env and ``record_video`` used to get none of its ``env_kwargs`` and stop
    at the wrapper's check."""
    pytest.importorskip("ale_py")
    tiny = ["--hyperparams", "model_size:'tiny'", "learning_starts:1000"]
    zoo(
        "train", "--env", "ALE/Pong-v5", "-n", "40", "--eval-freq", "20", "--eval-episodes", "1",
        "--num-threads", "1", "--seed", "0", *tiny, cwd=tmp_path,
    )  # fmt: skip
    run = tmp_path / "logs" / "dreamer" / "ALE-Pong-v5_1"
    assert (run / "evaluations.npz").is_file()
    out = zoo("record_video", "--env", "ALE/Pong-v5", "-f", "logs", "-n", "20", "-o", "videos", cwd=tmp_path)
    assert list((tmp_path / "videos").glob("*.mp4")), out


@requires_zoo
def test_train_dreamer_v2_uses_its_own_packaged_file(tmp_path):
    zoo("train", "--algo", "dreamer_v2", "--env", "Pendulum-v1", "-n", "150", "--num-threads", "1", *TINY, cwd=tmp_path)
    run = tmp_path / "logs" / "dreamer_v2" / "Pendulum-v1_1"
    config = (run / "Pendulum-v1" / "config.yml").read_text()
    assert "version" in config and "v2" in config
    from sb3_dreamer import Dreamer

    assert Dreamer.load(run / "Pendulum-v1.zip").version == "v2"


@requires_zoo
def test_optimize_runs_two_trials_and_writes_a_report(tmp_path):
    zoo(
        "optimize", "--env", "CartPole-v1", "-n", "300", "--n-trials", "2", "--n-jobs", "1", "--sampler", "random",
        "--pruner", "none", "--eval-episodes", "2", "--num-threads", "1", "--no-optim-plots",
        "--hyperparams", "learning_starts:280",
        cwd=tmp_path,
    )  # fmt: skip
    reports = list((tmp_path / "logs" / "dreamer").glob("report_CartPole-v1_2-trials-300-*.csv"))
    assert len(reports) == 1
    with open(reports[0], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["state"] for row in rows] == ["COMPLETE", "COMPLETE"]
    assert all(row["params_model_size"] in ("T", "XS", "S") for row in rows)


@requires_zoo
def test_sampled_parameters_build_a_dreamer():
    import optuna

    from sb3_dreamer import Dreamer

    params = {
        "model_size": "T", "sequence_length": 32, "train_ratio": 64, "model_lr": 1e-4, "actor_lr": 3e-5,
        "critic_lr": 3e-5, "horizon": 15, "ent_coef": 3e-4, "n_envs": 1,
    }  # fmt: skip
    kwargs = sample_dreamer_params(optuna.trial.FixedTrial(params), n_actions=1, n_envs=1, additional_args={})
    assert kwargs["train_freq"] == 8 and kwargs["gradient_steps"] == 1  # 16 * 32 / 64
    assert convert_dreamer_params(params) == kwargs  # what rl_zoo3 rebuilds from the stored trial
    on_eight = {**params, "train_ratio": 512, "n_envs": 8}
    kwargs = sample_dreamer_params(optuna.trial.FixedTrial(on_eight), n_actions=1, n_envs=8, additional_args={})
    assert (kwargs["train_freq"], kwargs["gradient_steps"]) == (1, 8)  # 512 * 8 / (16 * 32)
    assert convert_dreamer_params(on_eight) == kwargs
    model = Dreamer("MlpPolicy", "CartPole-v1", **kwargs)
    assert model.dreamer_config.horizon == 15 and model.dreamer_config.model_lr == 1e-4
    assert model.model_size == "T"


def test_train_schedule_matches_the_train_ratio():
    assert train_schedule(512, 16 * 64) == (2, 1)
    assert train_schedule(128, 16 * 32) == (4, 1)
    assert train_schedule(1024, 16 * 32) == (1, 2)
    assert train_schedule(128, 16 * 32, n_envs=4) == (1, 1)
    # 3 envs: 256 x 3 = 768 replayed steps per vec-env step, 3 updates of 512 every 2 (was 2 every 1)
    assert train_schedule(256, 16 * 32, n_envs=3) == (2, 3)
    assert train_schedule(128, 16 * 32, n_envs=3) == (4, 3)
    with pytest.raises(ValueError, match="train_ratio"):
        train_schedule(0, 512)
    params = {
        "model_size": "S", "sequence_length": 64, "train_ratio": 32, "model_lr": 1e-4, "actor_lr": 3e-5,
        "critic_lr": 3e-5, "horizon": 15, "ent_coef": 3e-4,
    }  # fmt: skip
    kwargs = convert_dreamer_params(params)
    ratio = kwargs["batch_size"] * kwargs["sequence_length"] * kwargs["gradient_steps"] / kwargs["train_freq"]
    assert ratio == 32


def test_plot_names_env_ids_as_rl_zoo3_names_run_folders():
    from sb3_dreamer.zoo import _folder_env_names

    args = ["-a", "dreamer", "--env", "dm_control/cartpole-balance-v0", "ALE/Pong-v5", "-f", "logs/x/y"]
    assert _folder_env_names(args) == [
        "-a", "dreamer", "--env", "dm_control-cartpole-balance-v0", "ALE-Pong-v5", "-f", "logs/x/y",
    ]  # fmt: skip


def test_defaults_add_dreamer_and_the_packaged_file_only_when_missing():
    conf = str(hyperparams_path())
    assert with_defaults(["--env", "CartPole-v1"], conf_file=True) == [
        "--env", "CartPole-v1", "--algo", "dreamer", "--conf-file", conf,
    ]  # fmt: skip
    assert with_defaults(["--algo", "dreamer", "-conf", "my.yml"], conf_file=True) == [
        "--algo",
        "dreamer",
        "-conf",
        "my.yml",
    ]
    assert with_defaults(["--algo", "dreamer_v2", "--env", "CartPole-v1"], conf_file=True) == [
        "--algo", "dreamer_v2", "--env", "CartPole-v1", "--conf-file", str(hyperparams_path("dreamer_v2")),
    ]  # fmt: skip
    assert with_defaults(["--algo", "ppo"], conf_file=True) == ["--algo", "ppo"]
    # rl_zoo3 accepts abbreviations: the user's file and algorithm must not be overridden
    assert with_defaults(["--al", "dreamer_v2", "--conf", "my.yml"], conf_file=True) == [
        "--al", "dreamer_v2", "--conf", "my.yml",
    ]  # fmt: skip
    assert with_defaults(["-f", "logs"], conf_file=False) == ["-f", "logs", "--algo", "dreamer"]


def test_missing_rl_zoo3_is_a_clear_import_error(monkeypatch):
    from sb3_dreamer import zoo

    monkeypatch.setitem(sys.modules, "rl_zoo3", None)
    with pytest.raises(ImportError, match=r"pip install 'sb3-dreamer\[zoo\]'"):
        zoo.register()


def test_unknown_command_prints_usage(capsys):
    from sb3_dreamer import zoo

    with pytest.raises(SystemExit) as exit_info:
        zoo.main(["fly"])
    assert exit_info.value.code == 2
    assert "train,optimize,enjoy,record_video,plot" in capsys.readouterr().err

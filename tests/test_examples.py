"""Every example runs as written, with a tiny budget."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, timeout: int = 600) -> str:
    """Run a script with the repository as working directory, on one torch thread; return its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def test_quickstart_trains_and_prints_a_result(tmp_path):
    out = run("examples/quickstart.py", "--steps", "1100", "--save", str(tmp_path / "quick"))
    assert "Mean evaluation return over 10 episodes" in out
    assert (tmp_path / "quick.zip").exists()


def test_benchmark_sb3_writes_csv_table_and_plot(tmp_path):
    out = run(
        "examples/benchmark_sb3.py", "--env", "CartPole-v1", "--algos", "ppo", "dreamer", "--seeds", "0",
        "--steps", "1000", "--dreamer-steps", "1000", "--eval-freq", "500", "--eval-episodes", "2",
        "--jobs", "1", "--out", str(tmp_path),
    )  # fmt: skip
    assert "| dreamer |" in out and "| ppo |" in out
    assert (tmp_path / "CartPole-v1.png").exists()
    assert (tmp_path / "CartPole-v1_dreamer_seed0.csv").exists()


def test_benchmark_sb3_tagged_variant_gets_its_own_csv_and_row(tmp_path):
    out = run(
        "examples/benchmark_sb3.py", "--env", "CartPole-v1", "--algos", "dreamer", "--seeds", "0",
        "--steps", "700", "--eval-freq", "700", "--eval-episodes", "1", "--jobs", "1", "--out", str(tmp_path),
        "--tag", "_variant", "--dreamer-kwargs", '{"learning_starts": 600, "hyperparams": {"actor_lr": 1e-4}}',
    )  # fmt: skip
    assert "| dreamer_variant |" in out
    assert (tmp_path / "CartPole-v1_dreamer_variant_seed0.csv").exists()
    # its own plot: the task's main plot is left alone
    assert (tmp_path / "CartPole-v1_variant.png").exists() and not (tmp_path / "CartPole-v1.png").exists()


def test_benchmark_sb3_dreamer_kwargs_override_the_packaged_entry():
    spec = importlib.util.spec_from_file_location("benchmark_sb3", ROOT / "examples" / "benchmark_sb3.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    overrides = {"train_freq": 8, "sequence_length": 16, "hyperparams": {"actor_lr": 2e-5}}
    model = module.make_model("dreamer", "CartPole-v1", 0, 1000, overrides)
    packaged = module.make_model("dreamer", "CartPole-v1", 0, 1000)
    assert model.train_freq.frequency == 8 and model.sequence_length == 16
    assert model.dreamer_config.actor_lr == 2e-5
    # the packaged entry's other hyperparams are kept, not replaced by the override's dict
    assert model.dreamer_config.model_lr == packaged.dreamer_config.model_lr
    assert packaged.dreamer_config.actor_lr != 2e-5 and packaged.sequence_length != 16


def test_benchmark_speed_prints_a_table():
    out = run(
        "examples/benchmark_speed.py", "--sizes", "tiny", "--precisions", "fp32", "--batch", "2", "--length", "8",
        "--updates", "1", "--threads", "1", "--pixels-size", "16",
    )  # fmt: skip
    assert "| tiny | float32 |" in out


def test_dmc_pixels_trains_evaluates_and_writes_an_imagination_gif(tmp_path):
    pytest.importorskip("shimmy", reason="needs the dmc extra")
    gif = tmp_path / "imagination.gif"
    out = run("examples/dmc_pixels.py", "--tiny", "--gif", str(gif), "--tensorboard", str(tmp_path / "runs"))
    assert "from pixels (64, 64, 3)" in out and "Evaluation return" in out
    assert gif.stat().st_size > 0
    assert list((tmp_path / "runs").rglob("events.out.tfevents.*"))


def test_atari_trains_and_evaluates(tmp_path):
    pytest.importorskip("ale_py", reason="needs the atari extra")
    out = run("examples/atari.py", "--tiny", "--save", str(tmp_path / "pong"))
    assert "Training Dreamer on Pong (18 actions)" in out and "Evaluation score" in out
    assert (tmp_path / "pong.zip").exists()


def test_dict_observations_train_a_multi_input_policy():
    pytest.importorskip("shimmy", reason="needs the dmc extra")
    out = run("examples/dict_observations.py", "--tiny")
    assert "observation['pixels']: (64, 64, 3) uint8" in out and "observation['proprio']: (5,) float32" in out
    assert "Evaluation return" in out


def test_compare_sb3_plots_both_curves(tmp_path):
    out = run("examples/compare_sb3.py", "--tiny", "--out", str(tmp_path / "compare.png"))
    assert "dreamer: final evaluation return" in out and "sac: final evaluation return" in out
    assert (tmp_path / "compare.png").stat().st_size > 0


def test_record_video_loads_a_saved_agent_and_writes_mp4(tmp_path):
    pytest.importorskip("pygame", reason="rendering CartPole needs pygame")
    from sb3_dreamer import Dreamer

    Dreamer("MlpPolicy", "CartPole-v1", model_size="tiny", seed=0).save(tmp_path / "agent")
    out = run(
        "examples/record_video.py", "--model", str(tmp_path / "agent.zip"), "--out", str(tmp_path / "videos"),
        "--max-steps", "20",
    )  # fmt: skip
    assert "Returns:" in out
    assert list((tmp_path / "videos").glob("*.mp4"))


def test_custom_env_passes_check_env_and_trains():
    out = run("examples/custom_env.py", "--tiny")
    assert "Evaluation return over 20 episodes" in out


def test_eval_modes_prints_three_evaluations_per_budget():
    out = run(
        "examples/eval_modes.py", "--steps", "1100", "--eval-freq", "550", "--episodes", "1", "--model-size", "tiny",
    )  # fmt: skip
    assert "| mode / mode | sample / mode | sample / sample |" in out
    assert out.count("\n| 550 |") == 1 and out.count("\n| 1100 |") == 1

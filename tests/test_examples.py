"""Every example runs as written, with a tiny budget."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, timeout: int = 600) -> str:
    result = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
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


def test_benchmark_speed_prints_a_table():
    out = run(
        "examples/benchmark_speed.py", "--sizes", "tiny", "--precisions", "fp32", "--batch", "2", "--length", "8",
        "--updates", "1", "--threads", "1", "--pixels-size", "16",
    )  # fmt: skip
    assert "| tiny | float32 |" in out

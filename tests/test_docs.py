"""The documentation site builds with warnings as errors, and includes the pages others link to."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    importlib.util.find_spec("sphinx") is None or importlib.util.find_spec("myst_parser") is None,
    reason="needs the docs extra (pip install -e '.[docs]')",
)
def test_docs_build_without_warnings(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "docs", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    for page in ("index", "install", "quickstart", "sb3_users", "versions", "environments", "zoo", "videos",
                 "examples", "benchmarks", "reliability", "api", "changelog"):  # fmt: skip
        assert (tmp_path / f"{page}.html").is_file(), page
    api = (tmp_path / "api.html").read_text(encoding="utf-8")
    for name in ("sb3_dreamer.dreamer.Dreamer", "sb3_dreamer.envs.wrap_dmc", "sb3_dreamer.zoo.sample_dreamer_params"):
        assert f'id="{name}"' in api, name
    assert (tmp_path / "_images" / "CartPole-v1.png").is_file()  # the benchmark plots are part of the site

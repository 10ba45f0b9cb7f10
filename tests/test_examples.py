"""Every example runs as written, with a tiny budget."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from tests.conftest import load_example

ROOT = Path(__file__).resolve().parents[1]
#: The smallest pixel agent that trains within a few seconds.
TINY_PIXELS = {"model_size": "tiny", "batch_size": 2, "sequence_length": 8, "learning_starts": 32, "train_freq": 16}


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
        "--save-models",
    )  # fmt: skip
    assert "| dreamer_variant |" in out
    assert (tmp_path / "CartPole-v1_dreamer_variant_seed0.csv").exists()
    # --save-models leaves the run's last agent beside its CSV, with the variant's settings
    from sb3_dreamer import Dreamer

    saved = Dreamer.load(tmp_path / "CartPole-v1_dreamer_variant_seed0.zip")
    assert saved.num_timesteps == 700 and saved.dreamer_config.actor_lr == 1e-4
    # its own plot: the task's main plot is left alone
    assert (tmp_path / "CartPole-v1_variant.png").exists() and not (tmp_path / "CartPole-v1.png").exists()


def test_benchmark_sb3_resume_continues_a_stopped_run_from_its_model_and_buffer(tmp_path):
    from stable_baselines3.common.save_util import load_from_pkl

    from sb3_dreamer import Dreamer

    common = (
        "examples/benchmark_sb3.py", "--env", "CartPole-v1", "--algos", "dreamer", "--seeds", "0",
        "--eval-freq", "300", "--eval-episodes", "1", "--jobs", "1", "--out", str(tmp_path),
        "--dreamer-kwargs", '{"learning_starts": 200, "train_freq": 10}',
    )  # fmt: skip
    run(*common, "--steps", "600", "--save-models")
    csv_path = tmp_path / "CartPole-v1_dreamer_seed0.csv"
    first_rows = csv_path.read_text().splitlines()
    # (the buffer keeps each episode's final observation as an extra row: more rows than steps)
    rows_at_600 = load_from_pkl(tmp_path / "CartPole-v1_dreamer_seed0_buffer.pkl").size()
    assert len(first_rows) == 3 and rows_at_600 >= 600
    updates_at_600 = Dreamer.load(tmp_path / "CartPole-v1_dreamer_seed0.zip")._n_updates

    out = run(*common, "--steps", "900", "--resume")
    assert "resuming at 600 env steps" in out
    rows = csv_path.read_text().splitlines()
    # the earlier rows are kept as they were, one evaluation is added, and the clock goes on
    assert rows[:3] == first_rows and len(rows) == 4 and rows[3].split(",")[3] == "900"
    assert float(rows[3].split(",")[-1]) > float(first_rows[2].split(",")[-1])
    resumed = Dreamer.load(tmp_path / "CartPole-v1_dreamer_seed0.zip")
    # training went on: one update per 10 env steps from 610 (saved at 900 before that round's update)
    assert resumed.num_timesteps == 900 and resumed._n_updates == updates_at_600 + 29
    # the buffer went on from the saved one instead of starting empty
    assert load_from_pkl(tmp_path / "CartPole-v1_dreamer_seed0_buffer.pkl").size() >= rows_at_600 + 300
    # a finished run is left as it is; a CSV without its model is not silently restarted
    assert "resuming at 900 env steps" in run(*common, "--steps", "900", "--resume")
    assert csv_path.read_text().splitlines() == rows
    # ... and its failure does not stop the run beside it (seed 1, started fresh)
    (tmp_path / "CartPole-v1_dreamer_seed0.zip").unlink()
    result = subprocess.run(
        [sys.executable, *common, "--steps", "600", "--seeds", "0", "1", "--jobs", "2", "--resume"],
        cwd=ROOT, capture_output=True, text=True, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode != 0 and "its model" in result.stderr and "is missing" in result.stderr
    assert "1 run(s) failed: dreamer CartPole-v1 seed 0" in result.stderr
    assert csv_path.read_text().splitlines() == rows
    assert len((tmp_path / "CartPole-v1_dreamer_seed1.csv").read_text().splitlines()) == 3


def test_benchmark_sb3_resume_continues_a_run_of_several_envs_saved_past_its_evaluation_step(tmp_path):
    # PPO on CartPole-v1 steps 8 envs at a time: the evaluation at 300 runs (and saves) at step 304
    common = (
        "examples/benchmark_sb3.py", "--env", "CartPole-v1", "--algos", "ppo", "--seeds", "0",
        "--eval-freq", "300", "--eval-episodes", "1", "--jobs", "1", "--out", str(tmp_path),
    )  # fmt: skip
    run(*common, "--steps", "300", "--save-models")
    assert PPO.load(tmp_path / "CartPole-v1_ppo_seed0.zip").num_timesteps == 304
    # a CSV of before the train_return column: its rows are kept, with that column empty
    csv_path = tmp_path / "CartPole-v1_ppo_seed0.csv"
    header, row = csv_path.read_text().splitlines()
    column = header.split(",").index("train_return")
    csv_path.write_text(
        "\n".join(",".join(v for i, v in enumerate(line.split(",")) if i != column) for line in (header, row)) + "\n"
    )
    assert "resuming at 300 env steps" in run(*common, "--steps", "600", "--resume")
    lines = csv_path.read_text().splitlines()
    assert lines[0] == header and [line.split(",")[3] for line in lines[1:]] == ["300", "600"]
    assert lines[1].split(",")[column] == "" and lines[2].split(",")[column] != ""


def fake_job(name: str, out: Path) -> tuple:
    """A job tuple of benchmark_sb3 for :func:`fake_run`: ``name`` in the algo's place."""
    return (name, "CartPole-v1", 0, 100, 100, 1, str(out), "", {}, 1, False, False)


def fake_run(job: tuple) -> None:
    """A worker body for ``run_jobs``: dies by SIGKILL, sleeps after writing its pid, or returns."""
    if job[0] == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    if job[0] == "sleeper":
        (Path(job[6]) / "sleeper.pid").write_text(str(os.getpid()))
        time.sleep(600)


def test_benchmark_sb3_reports_a_killed_worker_instead_of_waiting_for_it(tmp_path):
    """A worker killed for memory made the multiprocessing pool drop its job and wait forever."""
    module = load_example("benchmark_sb3")
    jobs = [fake_job("killed", tmp_path), fake_job("fine", tmp_path)]
    assert module.run_jobs(jobs, 2, target=fake_run) == ["killed CartPole-v1 seed 0"]


def test_benchmark_sb3_sigterm_stops_the_workers_too(tmp_path):
    """A plain ``kill`` of the parent left its workers training on their own for hours."""
    script = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import benchmark_sb3, test_examples; "
        "benchmark_sb3.run_jobs([test_examples.fake_job('sleeper', sys.argv[3])], 1, target=test_examples.fake_run)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(ROOT / "examples"), str(ROOT / "tests"), str(tmp_path)], cwd=ROOT
    )
    pid_file = tmp_path / "sleeper.pid"
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        worker = int(pid_file.read_text())
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=60) == 128 + signal.SIGTERM
        with pytest.raises(ProcessLookupError):
            os.kill(worker, 0)
    finally:
        parent.kill()
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_benchmark_sb3_summary_of_missing_runs_and_half_thousand_budgets(tmp_path):
    module = load_example("benchmark_sb3")
    assert module.summarise(tmp_path, "CartPole-v1", ["dreamer"]).startswith("no CSVs of CartPole-v1")
    rows = "".join(f"dreamer,CartPole-v1,{seed},{steps},10,0,,1.0\n" for seed in (2, 10) for steps in (500, 1000, 1500))
    for seed in (2, 10):
        lines = [line for line in rows.splitlines() if line.split(",")[2] == str(seed)]
        (tmp_path / f"CartPole-v1_dreamer_seed{seed}.csv").write_text(
            ",".join(module.CSV_COLUMNS) + "\n" + "\n".join(lines) + "\n"
        )
    table = module.summarise(tmp_path, "CartPole-v1", ["dreamer"])
    assert "| algo | 0.5k | 1k | 1.5k |" in table


def test_benchmark_sb3_refuses_an_entry_written_for_another_policy():
    """dm_control/walker-walk-v0's V2 entry is for proprioception; the benchmark runs every
    dm_control id from pixels, and trained a pixel agent with the proprioception settings."""
    with pytest.raises(ValueError, match="written for MlpPolicy"):
        load_example("benchmark_sb3").make_model("dreamer_v2", "dm_control/walker-walk-v0", 0, 1000)


def test_benchmark_sb3_ppo_on_pong_stacks_four_frames_for_training_and_evaluation():
    """The zoo's atari PPO entry stacks 4 frames; its evaluation env must give the same stack."""
    pytest.importorskip("ale_py")
    from stable_baselines3.common.evaluation import evaluate_policy

    module = load_example("benchmark_sb3")
    model = module.make_model("ppo", "ALE/Pong-v5", 0, 75_000)
    assert model.n_envs == 8 and model.observation_space.shape == (4, 64, 64)  # channel-first, 4 frames
    assert (model.n_steps, model.n_epochs, model.batch_size, model.ent_coef) == (128, 4, 256, 0.01)
    eval_env = module.make_eval_env("ppo", "ALE/Pong-v5", 10_000)
    assert eval_env.num_envs == 1 and eval_env.observation_space.shape == (64, 64, 4)
    model.learn(8)  # one rollout (8 x 128 steps) and its update, through SB3's image transpose
    episode_lengths = []

    def stop_after_a_few_steps(locals_: dict, _globals: dict) -> None:
        episode_lengths.append(locals_["current_lengths"][0])
        if len(episode_lengths) == 30:
            raise StopIteration

    with pytest.raises(StopIteration):
        evaluate_policy(model, eval_env, n_eval_episodes=1, deterministic=False, callback=stop_after_a_few_steps)
    assert episode_lengths == list(range(1, 31))  # stacked observations went through predict step by step
    model.get_env().close()
    eval_env.close()
    # the other algorithms evaluate on one monitored env, as before
    plain_env = module.make_eval_env("dreamer", "ALE/Pong-v5", 0)
    assert not hasattr(plain_env, "num_envs")
    plain_env.close()


def test_benchmark_sb3_dreamer_kwargs_override_the_packaged_entry():
    module = load_example("benchmark_sb3")
    overrides = {"train_freq": 8, "sequence_length": 16, "hyperparams": {"actor_lr": 2e-5}}
    model = module.make_model("dreamer", "CartPole-v1", 0, 1000, overrides)
    packaged = module.make_model("dreamer", "CartPole-v1", 0, 1000)
    assert model.train_freq.frequency == 8 and model.sequence_length == 16
    assert model.dreamer_config.actor_lr == 2e-5
    # the packaged entry's other hyperparams are kept, not replaced by the override's dict
    assert model.dreamer_config.model_lr == packaged.dreamer_config.model_lr
    assert packaged.dreamer_config.actor_lr != 2e-5 and packaged.sequence_length != 16
    # every DeepMind Control task and ALE game is a pixel task with its action repeat
    assert [module.action_repeat(env_id) for env_id in ("dm_control/walker-walk-v0", "ALE/Breakout-v5")] == [2, 4]
    assert module.policy_name("dm_control/walker-walk-v0") == "CnnPolicy" and module.action_repeat("CartPole-v1") == 1


def test_benchmark_speed_prints_a_table():
    out = run(
        "examples/benchmark_speed.py", "--sizes", "tiny", "--precisions", "fp32", "--batch", "2", "--length", "8",
        "--updates", "1", "--threads", "1", "--pixels-size", "16",
    )  # fmt: skip
    assert "| tiny | float32 |" in out


def test_dmc_pixels_trains_evaluates_and_writes_an_imagination_gif(tmp_path):
    pytest.importorskip("shimmy", reason="needs the dmc extra")
    gif = tmp_path / "imagination.gif"
    out = run("examples/dmc_pixels.py", "--tiny", "--video", str(gif), "--tensorboard", str(tmp_path / "runs"))
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


def test_compare_sb3_stops_ppo_at_the_budget(tmp_path):
    out = run("examples/compare_sb3.py", "--tiny", "--env", "CartPole-v1", "--out", str(tmp_path / "compare.png"))
    assert re.search(r"^dreamer: final evaluation return .* \(400 env steps\)$", out, re.M)
    # not its 2048-step rollout (stopped inside its first one, this PPO has made no update)
    assert re.search(r"^ppo: final evaluation return .* \(400 env steps\)$", out, re.M)


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
    assert re.search(r"goal left: turn left [+-]\d\.\d\d, turn right [+-]\d\.\d\d", out), out
    assert re.search(r"goal right: turn left [+-]\d\.\d\d, turn right [+-]\d\.\d\d", out), out


def test_custom_env_needs_memory():
    """The corridor looks the same for both goals, whatever the agent does, so only a policy that
    remembers the first observation's hint turns correctly every time."""
    custom_env = load_example("custom_env")
    env = custom_env.RememberTheGoal(corridor_length=3)
    seen_after_reset: dict[float, list[list[float]]] = {}
    for seed in range(20):
        first, _ = env.reset(seed=seed)
        goal_side = first[1]
        assert goal_side in (-1.0, 1.0)
        observations, returns, done = [], 0.0, False
        while not done:
            observation, reward, terminated, truncated, _ = env.step(int(goal_side > 0))
            observations.append(observation.tolist())
            returns += reward
            done = terminated or truncated
        assert returns == 1.0 and len(observations) == 4
        assert observations == seen_after_reset.setdefault(goal_side, observations)
    assert seen_after_reset[-1.0] == seen_after_reset[1.0]  # nothing after the first step tells the goals apart
    env.reset(seed=0)
    assert [env.step(action)[1] for action in (0, 1, 0)] == [0.0, 0.0, 0.0]  # the corridor pays nothing
    assert env.step(0)[1] in (-1.0, 1.0)  # the turn
    with pytest.raises(ValueError, match="corridor_length"):
        custom_env.RememberTheGoal(corridor_length=0)


def test_eval_modes_prints_three_evaluations_endings_entropy_and_scale_per_budget():
    out = run(
        "examples/eval_modes.py", "--steps", "1100", "--eval-freq", "550", "--episodes", "2", "--model-size", "tiny",
        "--dreamer-kwargs", '{"ent_coef": 0.01, "hyperparams": {"return_norm_limit": 1000.0}}',
    )  # fmt: skip
    assert "| mode / mode | sample / mode | sample / sample | endings (mode / mode) | entropy | return scale |" in out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith(("| 550 |", "| 1100 |"))]
    assert [row[0].strip() for row in rows] == ["550", "1100"]
    for row in rows:
        endings = dict(part.split() for part in row[4].split(","))
        assert set(endings) <= {"cart", "pole", "time"} and sum(map(int, endings.values())) == 2
        assert 0.0 <= float(row[5]) <= np.log(2.0) + 1e-3  # entropy of a two-action policy
        assert float(row[6]) == 1000.0  # the overridden return_norm_limit, above any return range here


def test_eval_modes_builds_the_packaged_entry_of_the_chosen_version():
    eval_modes = load_example("eval_modes")
    model = eval_modes.packaged_model("Pendulum-v1", 0, "tiny", {"hyperparams": {"free_bits": 0.0}}, "dreamer_v2")
    config = model.policy.config
    # dreamer_v2.yml's Pendulum-v1 entry (version, critic rate, train ratio) under the override
    assert config.version == "v2" and config.critic_lr == 1e-3 and config.free_bits == 0.0
    assert model.train_freq.frequency == 2 and model.batch_size == 16
    assert eval_modes.packaged_model("Pendulum-v1", 0, "tiny", {}).policy.config.version == "v3"


def test_eval_modes_sample_mode_is_the_training_policy_and_feeds_the_executed_action(monkeypatch):
    """``sample / sample`` adds the collection noise and, like ``learn``, feeds the RSSM the clipped
    action the env executes; the return scale reads "off" where a version has no normalisation."""
    eval_modes = load_example("eval_modes")
    env = gym.make("Pendulum-v1", max_episode_steps=20)
    for algo, scale in (("dreamer", "1.00"), ("dreamer_v1", "off")):
        model = eval_modes.packaged_model("Pendulum-v1", 0, "tiny", {}, algo)
        assert eval_modes.return_scale(model) == scale
        rssm, actor = model.policy.world_model.rssm, model.policy.actor_critic.actor
        fed_actions, explore_calls = [], []
        obs_step, explore = rssm.obs_step, actor.explore

        def recording_obs_step(state, prev_action, *args, **kwargs):
            fed_actions.append(prev_action)
            return obs_step(state, prev_action, *args, **kwargs)

        def recording_explore(action):
            explore_calls.append(action)
            return explore(action)

        monkeypatch.setattr(rssm, "obs_step", recording_obs_step)
        monkeypatch.setattr(actor, "explore", recording_explore)
        monkeypatch.setattr(actor, "sample", lambda params: torch.full((1, 1), 5.0))  # far outside the bounds
        eval_modes.play_episode(model, env, posterior_sample=True, actor_sample=True)
        assert len(fed_actions) == 20 and len(explore_calls) == 20
        assert max(float(action.abs().max()) for action in fed_actions) == 1.0  # clipped, as executed
        monkeypatch.undo()


def test_eval_modes_reads_the_cartpole_termination_cause():
    eval_modes = load_example("eval_modes")
    assert eval_modes.ending(np.array([2.5, 0.1, 0.0, 0.0]), True, "CartPole-v1") == "cart"
    assert eval_modes.ending(np.array([-0.3, 0.1, -0.25, 0.0]), True, "CartPole-v1") == "pole"
    assert eval_modes.ending(np.array([2.5, 0.1, 0.0, 0.0]), False, "CartPole-v1") == "time"
    assert eval_modes.ending(np.array([0.0]), True, "Pendulum-v1") == "end"


def test_diagnose_dmc_cartpole_factors_multiply_to_the_tasks_reward():
    import sb3_dreamer.envs  # noqa: F401 (picks headless rendering before shimmy loads mujoco)

    shimmy = pytest.importorskip("shimmy")
    import gymnasium as gym

    diagnose = load_example("diagnose_dmc_cartpole")
    gym.register_envs(shimmy)
    env = gym.make("dm_control/cartpole-balance-v0")
    env.reset(seed=0)
    physics = env.unwrapped._env.physics
    rng = np.random.default_rng(0)
    for _ in range(50):
        _, reward, *_ = env.step(rng.uniform(-1, 1, size=(1,)).astype(np.float32))
        factors = diagnose.reward_factors(physics)
        assert np.prod(list(factors.values())) == pytest.approx(reward, rel=1e-6)
        assert factors["small_control"] < 1.0  # a random push is never free


def test_diagnose_dmc_cartpole_reads_a_saved_pixel_agent(tmp_path):
    from sb3_dreamer import Dreamer
    from sb3_dreamer.envs import make_dmc_env  # before shimmy: picks headless rendering

    pytest.importorskip("shimmy")

    Dreamer("CnnPolicy", make_dmc_env("cartpole-balance"), **TINY_PIXELS).learn(64).save(tmp_path / "agent")
    out = run(
        "examples/diagnose_dmc_cartpole.py", str(tmp_path / "agent.zip"), "--episodes", "1",
        "--imagine", "4", "--imagine-every", "100",
    )  # fmt: skip
    cells = next(line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| 0 |"))
    assert len(cells) == 14 and 0 <= float(cells[1]) <= 1000
    assert all(0 <= float(cell) <= 1 for cell in cells[2:6])  # the four factors
    actor_std, critic_value, discounted, reward_error = (float(cell) for cell in cells[10:14])
    assert actor_std >= 0.1  # V3's Normal: std bounded below by its minimum
    assert np.isfinite(critic_value) and 0 <= discounted <= float(cells[1])  # rewards in [0, 2] per decision
    assert cells[13].strip()[0] in "+-" and np.isfinite(reward_error)
    assert "5 check points, reward over the next 4 decisions" in out  # decisions 0, 100, ..., 400 of 500
    names = ("actor", "zero", "push +1", "push -1")
    plans = {row[0].strip(): row[1:] for row in (line.split("|")[1:-1] for line in out.splitlines()) if len(row) == 6}
    assert set(plans) == {"plan", "---", *names}
    for plan in names:
        predicted, real, error = (float(cell) for cell in plans[plan][:3])
        assert np.isfinite(predicted) and 0 <= real <= 8 and error == pytest.approx(predicted - real, abs=0.011)
    firsts = [float(plans[plan][col].strip().rstrip("%")) for col in (3, 4) for plan in names]
    assert sum(firsts[:4]) == pytest.approx(100, abs=2) and sum(firsts[4:]) == pytest.approx(100, abs=2)


def test_diagnose_dmc_cartpole_replays_actions_from_a_physics_state():
    from sb3_dreamer.envs import make_dmc_env  # before shimmy: picks headless rendering

    pytest.importorskip("shimmy")
    diagnose = load_example("diagnose_dmc_cartpole")
    env = make_dmc_env("cartpole-balance", observation="proprio", action_repeat=2)
    env.reset(seed=5)
    for _ in range(40):  # somewhere into the episode, the pole moving
        env.step(np.full((1,), 0.5, dtype=np.float32))
    state = env.unwrapped._env.physics.get_state()
    actions = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(12, 1)
    expected = sum(float(env.step(action)[1]) for action in actions)
    replay_env = make_dmc_env("cartpole-balance", observation="proprio", action_repeat=2)
    assert diagnose.replay(replay_env, state, actions) == expected
    assert diagnose.replay(replay_env, state, actions) == expected  # from a fresh reset each time
    with pytest.raises(ValueError, match="a reference policy has none"):
        diagnose.play("zero", "cartpole-balance", seed=3, deterministic=True, action_repeat=2, imagine=5)
    with pytest.raises(ValueError, match="imagine_every >= 1"):
        diagnose.play("zero", "cartpole-balance", seed=3, deterministic=True, action_repeat=2, imagine_every=0)


def test_diagnose_dmc_cartpole_plays_reference_policies(monkeypatch):
    from sb3_dreamer.envs import make_dmc_env  # before shimmy: picks headless rendering

    pytest.importorskip("shimmy")
    diagnose = load_example("diagnose_dmc_cartpole")
    zero = diagnose.play("zero", "cartpole-balance", seed=3, deterministic=True, action_repeat=2)
    env = make_dmc_env("cartpole-balance", observation="proprio", action_repeat=2)
    env.reset(seed=3)
    total, done = 0.0, False
    while not done:
        _, reward, terminated, truncated, _ = env.step(np.zeros((1,), dtype=np.float32))
        total, done = total + float(reward), terminated or truncated
    assert zero.total == total and zero.mean_abs_action == 0.0 and zero.full_force == 0.0
    assert zero.fell_at is not None and zero.factors["small_control"] == 1.0  # frictionless: it falls unforced
    assert (
        zero.actor_std is None and zero.first_value is None and zero.first_return is None and zero.reward_error is None
    )
    full = diagnose.play("full", "cartpole-balance", seed=3, deterministic=True, action_repeat=2)
    assert full.full_force == 1.0 and full.total < zero.total  # pushed into the track's end
    random = diagnose.play("random", "cartpole-balance", seed=3, deterministic=True, action_repeat=2)
    assert 0.3 < random.mean_abs_action < 0.7 and random.factors["small_control"] < 1.0
    with pytest.raises(ValueError, match="reference policy must be one of"):
        diagnose.play("still", "cartpole-balance", seed=3, deterministic=True, action_repeat=2)
    monkeypatch.setattr("sys.argv", ["diagnose_dmc_cartpole.py", "--episodes", "1"])
    with pytest.raises(SystemExit):  # neither a model nor --reference
        diagnose.main()


def test_diagnose_dmc_cartpole_discounts_per_decision():
    diagnose = load_example("diagnose_dmc_cartpole")
    assert diagnose.discounted_return([1.0, 2.0, 4.0], 0.5) == pytest.approx(1.0 + 1.0 + 1.0)


def test_diagnose_update_prints_the_critic_gap_terminal_probe_gradient_agreement_and_catch_up_curves(tmp_path):
    saved = str(tmp_path / "lag")
    out = run(
        "examples/diagnose_update.py", "--steps", "1100", "--model-size", "tiny", "--updates", "50",
        "--critic-lrs", "1e-3", "--gradient-batches", "2", "--save", saved,
    )  # fmt: skip
    assert "critic value" in out and "imagined λ-return" in out and "imagined survival over 15 steps" in out
    continue_line = out.split("continue head over 2 batches: p(continue) ")[1].splitlines()[0]
    at_terminals, elsewhere = continue_line.split(" at the ")[0], continue_line.rsplit(", ", 1)[1]
    assert 0.0 <= float(elsewhere.split(" ")[0]) <= 1.0 and elsewhere.endswith(" elsewhere")
    assert at_terminals == "nan" or 0.0 <= float(at_terminals) <= 1.0
    kl_line = out.split("KL(posterior || prior) per replayed step: mean ")[1].splitlines()[0]
    kl_mean, kl_median = float(kl_line.split(",")[0]), float(kl_line.split("median ")[1].split(",")[0])
    below = float(kl_line.split("below the free-bits floor 1 at ")[1].split("%")[0])
    assert kl_mean >= 0.0 and kl_median >= 0.0 and 0.0 <= below <= 100.0
    correlations = out.split("correlation of the critic value with |observation[i]|: ")[1].splitlines()[0]
    # CartPole's four observation components, each with a correlation in [-1, 1]
    assert [part.split(" ")[0] for part in correlations.split(", ")] == ["[0]", "[1]", "[2]", "[3]"]
    assert all(-1.0 <= float(part.split(" ")[1]) <= 1.0 for part in correlations.split(", "))
    # random CartPole episodes end with the pole down; the value is binned by cart position
    by_ending = out.split("p(continue) at CartPole terminals by ending: ")[1].splitlines()[0]
    assert "pole " in by_ending and all(0.0 <= float(part.split(" ")[1]) <= 1.0 for part in by_ending.split(", "))
    assert out.split("critic value of non-terminal states by |cart position|: ")[1].startswith("[0, 0.5) ")
    errors = out.split("decoder's cart-position error by |cart position|: ")[1].splitlines()[0]
    assert errors.startswith("[0, 0.5) ")
    assert all(float(value) >= 0.0 for value in re.findall(r"\) (\S+)", errors))
    # the shares of the replayed states over the position bins (a partition) add up to 100%
    shares = out.split("replayed states by |cart position|: ")[1].splitlines()[0]
    assert abs(sum(float(value) for value in re.findall(r" (\S+)%", shares)) - 100.0) < 0.5
    bias = out.split("decoder's outward cart-position bias by |cart position|: ")[1].splitlines()[0]
    assert bias.startswith("[0, 0.5) ") and all(abs(float(v)) <= 5.0 for v in re.findall(r"\) (\S+)", bias))
    cosines = out.split("actor gradient cosine over 2 batches: ")[1].splitlines()[0].split(", ")
    names = [part.rsplit(" ", 3)[0] for part in cosines]
    assert names == ["bf16 vs fp32", "two imagination draws", "two batches"]
    assert all(-1.0 <= float(part.rsplit(" ", 3)[1]) <= 1.0 for part in cosines)
    assert out.count("critic lr 0.001: 50: ") == 1
    reloaded = run(
        "examples/diagnose_update.py", "--load", saved, "--updates", "50", "--critic-lrs", "1e-4", "1e-3",
        "--gradient-batches", "1",
    )  # fmt: skip
    # the saved model and buffer give the same snapshot as the run that trained them
    assert out.splitlines()[0] == reloaded.splitlines()[0]
    assert reloaded.count("critic lr ") == 2
    # the CartPole probes would misread another env's model: --env must be the model's own
    wrong_env = subprocess.run(
        [sys.executable, "examples/diagnose_update.py", "--load", saved, "--env", "Pendulum-v1"],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert wrong_env.returncode == 2 and "was not trained on --env Pendulum-v1" in wrong_env.stderr


def test_diagnose_critic_compares_values_with_real_returns(tmp_path):
    module = load_example("diagnose_critic")
    np.testing.assert_allclose(module.discounted_returns(np.array([1.0, 1.0, 1.0]), 0.5), [1.75, 1.5, 1.0])
    # the discounted next two real rewards from each of the three steps, cut at the episode's end
    np.testing.assert_allclose(module.real_rewards(np.array([1.0, 2.0, 4.0]), 3, 2, 0.5), [2.0, 4.0, 4.0])
    tiny = '{"model_size": "tiny", "learning_starts": 300, "hyperparams": {"critic_lr": 1e-3}}'
    out = run(
        "examples/diagnose_critic.py", "--env", "Pendulum-v1", "--algo", "dreamer_v2", "--steps", "800",
        "--chunk", "400", "--episodes", "1", "--dreamer-kwargs", tiny, "--log", str(tmp_path),
        "--save", str(tmp_path / "models"),
    )  # fmt: skip
    readings = [json.loads(line) for line in out.splitlines()]
    assert [reading["steps"] for reading in readings] == [400, 800]
    for reading in readings:
        assert set(reading) == {
            "steps", "return", "value", "return_to_go", "reward_error", "actor_std", "action_abs",
            "imagined_reward", "real_reward",
        }  # fmt: skip
        # discounted rewards of 15 steps: Pendulum's real ones in [-16.3 * 15, 0]
        assert -16.3 * 15 <= reading["real_reward"] <= 0.0 and np.isfinite(reading["imagined_reward"])
        # Pendulum's rewards lie in [-16.3, 0], over 200 steps; torques in [-2, 2]
        assert -16.3 * 200 <= reading["return"] <= 0.0 and -16.3 / (1 - 0.99) <= reading["return_to_go"] <= 0.0
        assert reading["reward_error"] >= 0.0 and reading["actor_std"] >= 0.1 and 0.0 <= reading["action_abs"] <= 2.0
    assert (tmp_path / "progress.csv").exists()
    assert sorted(path.name for path in (tmp_path / "models").iterdir()) == ["model_400.zip", "model_800.zip"]
    discrete = run(
        "examples/diagnose_critic.py", "--env", "CartPole-v1", "--algo", "dreamer_v2", "--steps", "400",
        "--chunk", "400", "--episodes", "1", "--dreamer-kwargs", tiny,
    )  # fmt: skip
    reading = json.loads(discrete.splitlines()[0])
    assert "actor_entropy" in reading and "action_abs" not in reading and 0.0 <= reading["actor_entropy"] <= np.log(2)

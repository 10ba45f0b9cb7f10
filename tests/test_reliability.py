"""Exact resume and determinism (CPU; float32, and bfloat16 matmuls for one resume)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env

from sb3_dreamer import Dreamer
from tests.conftest import assert_same_policy_state

EPISODE = 12


class DeterministicWalk(gym.Env):
    """A 1-D walk whose state is its observation: fully deterministic, fixed-length episodes."""

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-100.0, 100.0, (2,), np.float32)
        self.action_space = spaces.Discrete(3)
        self._x, self._t = 0.0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._x, self._t = 0.0, 0
        return np.array([self._x, 0.0], np.float32), {}

    def step(self, action):
        self._x += float(action) - 1.0
        self._t += 1
        obs = np.array([self._x, self._t / EPISODE], np.float32)
        return obs, -abs(self._x - 3.0), False, self._t >= EPISODE, {}


class RandomStart(DeterministicWalk):
    """The walk started at a point drawn from the env's seeded RNG, so episodes depend on the seed."""

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._x = float(self.np_random.uniform(-5.0, 5.0))
        return np.array([self._x, 0.0], np.float32), {}


KWARGS = dict(
    model_size="tiny",
    batch_size=4,
    sequence_length=8,
    learning_starts=12,
    buffer_size=500,
    train_freq=4,
    precision="fp32",
)


def make_model(seed: int, version: str = "v3", n_envs: int = 1, precision: str = "fp32") -> Dreamer:
    kwargs = {**KWARGS, "precision": precision}
    if version == "v2":  # copies of the slow critic before and after the save (the preset's 100 never come)
        kwargs["hyperparams"] = {"slow_critic_interval": 5}
    return Dreamer("MlpPolicy", make_vec_env(DeterministicWalk, n_envs=n_envs), seed=seed, version=version, **kwargs)


def assert_same_training_state(a: Dreamer, b: Dreamer) -> None:
    assert_same_policy_state(a.policy, b.policy)
    assert a._n_updates == b._n_updates and a.num_timesteps == b.num_timesteps


def test_same_seed_same_parameters_and_different_seed_differs():
    # SB3 seeds the global generators at construction, so build and train one model at a time
    first = make_model(3).learn(4 * EPISODE)
    second = make_model(3).learn(4 * EPISODE)
    other = make_model(4).learn(4 * EPISODE)
    assert_same_training_state(first, second)
    different = [not torch.equal(p, q) for p, q in zip(first.policy.parameters(), other.policy.parameters())]
    assert any(different)


@pytest.mark.parametrize(
    ("version", "n_envs", "precision"),
    # V2: the slow critic's copy interval across the save; V1: exploration noise; bf16: "auto" on CI
    [("v3", 1, "fp32"), ("v2", 2, "fp32"), ("v1", 1, "fp32"), ("v3", 1, "bf16")],
)
def test_resume_equals_uninterrupted_training(version, n_envs, precision, tmp_path):
    uninterrupted = make_model(7, version, n_envs, precision)
    uninterrupted.learn(6 * EPISODE * n_envs)

    interrupted = make_model(7, version, n_envs, precision)
    interrupted.learn(3 * EPISODE * n_envs)  # saved at the end of every env's third episode
    interrupted.save(tmp_path / "model")
    interrupted.save_replay_buffer(tmp_path / "buffer")
    del interrupted
    torch.manual_seed(12345)  # the loaded model must not depend on the global state at load time
    np.random.seed(12345)
    resumed = Dreamer.load(tmp_path / "model", env=make_vec_env(DeterministicWalk, n_envs=n_envs))
    resumed.load_replay_buffer(tmp_path / "buffer")
    resumed.learn(3 * EPISODE * n_envs, reset_num_timesteps=False)

    assert uninterrupted._n_updates > 10
    assert_same_training_state(uninterrupted, resumed)
    torch.testing.assert_close(
        uninterrupted.policy.actor_critic.return_normalizer.high,
        resumed.policy.actor_critic.return_normalizer.high,
        rtol=0,
        atol=0,
    )


def test_a_resumed_run_does_not_replay_its_first_episodes(tmp_path):
    """``load`` seeds the env from the run's seed and progress: the same file gives the same
    episode starts, but not those the run began with (the env's own RNG is not saved)."""
    run = Dreamer("MlpPolicy", make_vec_env(RandomStart, n_envs=1), seed=5, **KWARGS)
    run_start = Dreamer("MlpPolicy", make_vec_env(RandomStart, n_envs=1), seed=5, **KWARGS).env.reset()
    run.learn(2 * EPISODE)
    run.save(tmp_path / "at24")
    run.learn(EPISODE, reset_num_timesteps=False)
    run.save(tmp_path / "at36")

    def resumed_start(name: str) -> np.ndarray:
        return Dreamer.load(tmp_path / name, env=make_vec_env(RandomStart, n_envs=1)).env.reset()

    assert np.array_equal(resumed_start("at24"), resumed_start("at24"))
    assert not np.array_equal(resumed_start("at24"), run_start)
    assert not np.array_equal(resumed_start("at24"), resumed_start("at36"))


def test_non_finite_loss_skips_the_update_and_is_counted(monkeypatch):
    model = make_model(0)
    model.learn(2 * EPISODE)
    before = {name: p.detach().clone() for name, p in model.policy.world_model.named_parameters()}
    original = model.policy.world_model.loss

    def poisoned(*args, **kwargs):
        out = original(*args, **kwargs)
        return out._replace(loss=out.loss * float("nan"))

    monkeypatch.setattr(model.policy.world_model, "loss", poisoned)
    updates, skipped = model._n_updates, model._n_updates_skipped
    model.train(gradient_steps=2, batch_size=4)
    # the actor and critic were still applied (their losses do not read the poisoned total)
    assert model._n_updates_skipped == skipped + 2 and model._n_updates == updates + 2
    for name, param in model.policy.world_model.named_parameters():
        torch.testing.assert_close(param, before[name], rtol=0, atol=0, msg=name)
    monkeypatch.undo()
    model.learn(EPISODE, reset_num_timesteps=False)
    assert model._n_updates > updates
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())


def test_a_non_finite_actor_skips_only_the_actor_and_logs_the_rest(monkeypatch):
    model = make_model(0)
    model.learn(2 * EPISODE)
    policy = model.policy
    world_model_before = [p.detach().clone() for p in policy.world_model.parameters()]
    actor_before = [p.detach().clone() for p in policy.actor_critic.actor.parameters()]
    critic_before = [p.detach().clone() for p in policy.actor_critic.critic.parameters()]
    original = policy.actor_critic.actor_loss

    def poisoned(*args, **kwargs):
        out = original(*args, **kwargs)
        nan = float("nan")
        return out._replace(loss=out.loss * nan, metrics={**out.metrics, "actor_loss": out.metrics["actor_loss"] * nan})

    monkeypatch.setattr(policy.actor_critic, "actor_loss", poisoned)
    model.logger.dump()  # forget what learn recorded
    updates, skipped = model._n_updates, model._n_updates_skipped
    model.train(gradient_steps=2, batch_size=4)
    # the world model and the critic were updated, so the updates count, with a part skipped
    assert model._n_updates == updates + 2 and model._n_updates_skipped == skipped + 2
    assert any(not torch.equal(p, q) for p, q in zip(policy.world_model.parameters(), world_model_before))
    assert any(not torch.equal(p, q) for p, q in zip(policy.actor_critic.critic.parameters(), critic_before))
    for param, before in zip(policy.actor_critic.actor.parameters(), actor_before):
        torch.testing.assert_close(param, before, rtol=0, atol=0)
    logged = model.logger.name_to_value
    assert np.isfinite(logged["train/world_model_loss"]) and np.isfinite(logged["train/critic_loss"])
    assert "train/actor_loss" not in logged
    assert logged["train/n_updates_skipped_non_finite"] == skipped + 2


def test_keyboard_interrupt_in_callback_leaves_a_usable_model(tmp_path):
    from stable_baselines3.common.callbacks import BaseCallback

    class Interrupt(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps == 2 * EPISODE + 3:
                raise KeyboardInterrupt
            return True

    model = make_model(0)
    with pytest.raises(KeyboardInterrupt):
        model.learn(6 * EPISODE, callback=Interrupt())
    assert model.num_timesteps == 2 * EPISODE + 3
    model.learn(EPISODE, reset_num_timesteps=False)
    assert model.num_timesteps >= 3 * EPISODE + 3
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())
    model.save(tmp_path / "interrupted")
    loaded = Dreamer.load(tmp_path / "interrupted", env=make_vec_env(DeterministicWalk, n_envs=1))
    loaded.learn(EPISODE, reset_num_timesteps=False)
    assert loaded.num_timesteps >= 3 * EPISODE


def test_load_rejects_foreign_zip_and_other_spaces(tmp_path):
    (tmp_path / "junk.zip").write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="wasn.t a zip-file"):
        Dreamer.load(tmp_path / "junk.zip")
    model = make_model(0)
    model.save(tmp_path / "walk")
    with pytest.raises(ValueError, match="[Oo]bservation spaces do not match|[Aa]ction spaces do not match"):
        Dreamer.load(tmp_path / "walk", env=gym.make("CartPole-v1"))


class NaNAfter(DeterministicWalk):
    """Emits a NaN observation at step 5 of the first episode."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        if self._t == 5:
            obs[0] = np.nan
        return obs, reward, terminated, truncated, info


def test_non_finite_observation_from_env_is_an_error_not_a_silent_write():
    import pytest

    model = Dreamer("MlpPolicy", make_vec_env(NaNAfter, n_envs=1), seed=0, **KWARGS)
    with pytest.raises(ValueError, match="non-finite"):
        model.learn(2 * EPISODE)
    assert np.isfinite(model.replay_buffer.observations).all()


def test_memory_does_not_grow_once_the_buffer_is_full():
    import psutil

    process = psutil.Process()
    model = Dreamer("MlpPolicy", make_vec_env(DeterministicWalk, n_envs=1), seed=0, **{**KWARGS, "buffer_size": 100})
    model.learn(300)  # buffer full, allocator warmed up
    rss_full = process.memory_info().rss
    model.learn(1500, reset_num_timesteps=False)
    growth_mb = (process.memory_info().rss - rss_full) / 2**20
    assert growth_mb < 20, f"resident memory grew by {growth_mb:.1f} MB after the buffer was full"


def test_retain_freed_memory_is_idempotent_and_can_be_turned_off():
    import os
    import platform
    import subprocess
    import sys

    from sb3_dreamer.memory import OPT_OUT_VARIABLE, retain_freed_memory

    on_glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert retain_freed_memory() is on_glibc
    assert retain_freed_memory() is on_glibc
    # a fresh process with the opt-out variable keeps glibc's defaults
    probe = "from sb3_dreamer.memory import retain_freed_memory; print(retain_freed_memory())"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, OPT_OUT_VARIABLE: "0"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "False"


def test_a_second_replay_buffer_in_one_process_costs_only_its_written_rows():
    """With retain_freed_memory on, a large ``np.zeros`` came from reused heap that ``calloc``
    clears, so a buffer built after another was freed (a seed loop, zoo trials) committed its whole
    capacity at once; the rows now live in their own memory maps."""
    import platform
    import subprocess
    import sys

    if not (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"):
        pytest.skip("measures glibc's allocator through /proc")
    script = """
import gc
import numpy as np
from gymnasium import spaces
from sb3_dreamer.buffers import SequenceReplayBuffer
from sb3_dreamer.memory import retain_freed_memory

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

assert retain_freed_memory()
space = spaces.Box(0, 255, (3, 64, 64), np.uint8)  # 12 kB a row: 600 MB for 50k rows
def make():
    buffer = SequenceReplayBuffer(50_000, space, spaces.Discrete(2), device="cpu", sequence_length=8)
    buffer.observations[:4000] = 1  # some rows written
    return buffer
first = make()
pinned = [np.ones(64) for _ in range(100)]  # allocations after it keep its block in the heap
del first
gc.collect()
before = rss_mb()
second = make()
print(rss_mb() - before)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    growth_mb = float(result.stdout.strip().splitlines()[-1])
    assert growth_mb < 150, f"a second 600 MB buffer with 50 MB written grew the process by {growth_mb:.0f} MB"

"""Tests for :mod:`sb3_dreamer.buffers`."""

from __future__ import annotations

import warnings
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.save_util import load_from_pkl, save_to_pkl
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_dreamer import buffers
from sb3_dreamer.buffers import SequenceBatch, SequenceReplayBuffer

VEC_SPACE = spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float32)
IMAGE_SPACE = spaces.Box(0, 255, shape=(1, 8, 8), dtype=np.uint8)
BOX_ACTIONS = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
DISCRETE_ACTIONS = spaces.Discrete(4)

CONTINUE, TERMINATE, TIMEOUT = 0, 1, 2


def make_buffer(
    buffer_size: int,
    sequence_length: int,
    n_envs: int = 1,
    observation_space: spaces.Space = VEC_SPACE,
    action_space: spaces.Space = BOX_ACTIONS,
    **kwargs: Any,
) -> SequenceReplayBuffer:
    return SequenceReplayBuffer(
        buffer_size,
        observation_space,
        action_space,
        device="cpu",
        n_envs=n_envs,
        sequence_length=sequence_length,
        seed=0,
        **kwargs,
    )


class CounterStreams:
    """Fake vec-env whose observations encode ``[row counter, env id, 0.5]``.

    Every stored row of env ``e`` gets the next value of a per-env counter, so the
    rows of one stream are numbered ``0, 1, 2, ...`` in the order the buffer stores
    them. ``log[e][counter]`` records what that row must contain.
    """

    def __init__(self, n_envs: int, action_dim: int = 2) -> None:
        self.n_envs = n_envs
        self.action_dim = action_dim
        self.counters = np.zeros(n_envs, dtype=np.int64)  # counter of the current obs
        self.starts_episode = np.ones(n_envs, dtype=bool)
        self.log: list[dict[int, dict[str, Any]]] = [{} for _ in range(n_envs)]

    def _obs(self, counters: np.ndarray) -> np.ndarray:
        env_ids = np.arange(self.n_envs)
        return np.stack([counters, env_ids, np.full(self.n_envs, 0.5)], axis=1).astype(np.float32)

    def step(self, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, list]:
        """Arguments of ``SequenceReplayBuffer.add`` for one step with per-env ``ends``."""
        ends = np.asarray(ends)
        obs = self._obs(self.counters)
        next_counters = self.counters + 1
        next_obs = self._obs(next_counters)
        action = (next_counters[:, None] * 10.0 + np.arange(self.action_dim)[None, :]).astype(np.float32)
        reward = (-next_counters - 0.25 * np.arange(self.n_envs)).astype(np.float32)
        done = ends != CONTINUE
        infos = [
            {"TimeLimit.truncated": bool(end == TIMEOUT), "terminal_observation": next_obs[e]} if end else {}
            for e, end in enumerate(ends)
        ]
        for e in range(self.n_envs):
            if self.starts_episode[e]:
                self.log[e][int(self.counters[e])] = dict(
                    action=np.zeros(self.action_dim), reward=0.0, is_first=True, is_terminal=False
                )
            self.log[e][int(next_counters[e])] = dict(
                action=action[e], reward=float(reward[e]), is_first=False, is_terminal=bool(ends[e] == TERMINATE)
            )
        # After an episode end the vec-env auto-resets: the reset obs is a new row.
        self.counters = next_counters + done
        self.starts_episode = done
        return obs, next_obs, action, reward, done, infos


def check_batch_against_log(batch: SequenceBatch, streams: CounterStreams, capacity: int) -> None:
    """Assert every sampled row matches the reference log and windows are contiguous."""
    obs = batch.observations.numpy()  # (L, B, 3)
    counters = obs[..., 0].astype(np.int64)  # (L, B)
    env_ids = obs[..., 1].astype(np.int64)  # (L, B)
    assert (env_ids == env_ids[:1]).all(), "a window mixes env streams"
    assert (np.diff(counters, axis=0) == 1).all(), "a window spans the write head"
    for b in range(counters.shape[1]):
        e = env_ids[0, b]
        n_rows = len(streams.log[e])
        for t in range(counters.shape[0]):
            c = counters[t, b]
            assert n_rows - capacity <= c < n_rows, "sampled a dropped or unwritten row"
            row = streams.log[e][c]
            np.testing.assert_array_equal(batch.actions[t, b].numpy(), row["action"])
            assert batch.rewards[t, b].item() == pytest.approx(row["reward"])
            assert batch.is_first[t, b].item() == float(row["is_first"])
            assert batch.is_terminal[t, b].item() == float(row["is_terminal"])


def test_first_row_and_alignment() -> None:
    buffer = make_buffer(buffer_size=10, sequence_length=2)
    streams = CounterStreams(n_envs=1)
    for _ in range(3):
        buffer.add(*streams.step([CONTINUE]))

    assert buffer.size() == 4
    np.testing.assert_array_equal(buffer.positions, [4])
    np.testing.assert_array_equal(buffer.filled, [4])
    np.testing.assert_array_equal(buffer.observations[:4, 0, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(buffer.is_first[:4, 0], [True, False, False, False])
    np.testing.assert_array_equal(buffer.actions[0, 0], [0.0, 0.0])
    assert buffer.rewards[0, 0] == 0.0
    # The action/reward of step t are stored with the observation they led to.
    np.testing.assert_array_equal(buffer.actions[1:4, 0, 0], [10.0, 20.0, 30.0])
    np.testing.assert_array_equal(buffer.rewards[1:4, 0], [-1.0, -2.0, -3.0])
    assert not buffer.is_terminal[:4].any()


def test_terminal_vs_timeout_and_reset_obs_is_first() -> None:
    buffer = make_buffer(buffer_size=30, sequence_length=2, n_envs=3)
    streams = CounterStreams(n_envs=3)
    buffer.add(*streams.step([TERMINATE, TIMEOUT, CONTINUE]))
    np.testing.assert_array_equal(buffer.is_terminal[1], [True, False, False])
    np.testing.assert_array_equal(buffer._needs_first, [True, True, False])

    obs, next_obs, action, reward, done, infos = streams.step([CONTINUE, CONTINUE, CONTINUE])
    buffer.add(obs, next_obs, action, reward, done, infos)
    # Envs 0 and 1 got the reset obs as a first row before the new transition.
    np.testing.assert_array_equal(buffer.positions, [4, 4, 3])
    np.testing.assert_array_equal(buffer.observations[2, :2], obs[:2])
    np.testing.assert_array_equal(buffer.is_first[2, :2], [True, True])
    np.testing.assert_array_equal(buffer.actions[2, :2], np.zeros((2, 2)))
    np.testing.assert_array_equal(buffer.observations[3, :2], next_obs[:2])
    np.testing.assert_array_equal(buffer.observations[2, 2], next_obs[2])
    assert not buffer.is_first[2, 2]
    assert not buffer._needs_first.any()


def test_timeout_is_terminal_without_timeout_handling() -> None:
    buffer = make_buffer(buffer_size=10, sequence_length=2, handle_timeout_termination=False)
    streams = CounterStreams(n_envs=1)
    buffer.add(*streams.step([TIMEOUT]))
    assert buffer.is_terminal[1, 0]


def test_wraparound_drops_oldest_rows() -> None:
    buffer = make_buffer(buffer_size=5, sequence_length=3)
    streams = CounterStreams(n_envs=1)
    for _ in range(7):
        buffer.add(*streams.step([CONTINUE]))

    # 8 rows were written into 5 slots: rows 3..7 remain, row 8 goes to slot 3.
    assert buffer.size() == 5
    np.testing.assert_array_equal(buffer.positions, [3])
    np.testing.assert_array_equal(buffer.observations[:, 0, 0], [5, 6, 7, 3, 4])
    assert not buffer.is_first.any(), "the first row was overwritten"

    batch = buffer.sample(200)
    check_batch_against_log(batch, streams, capacity=5)
    starts = set(batch.observations[0, :, 0].numpy().astype(int).tolist())
    assert starts == {3, 4, 5}


def test_sampling_is_uniform_over_windows() -> None:
    buffer = make_buffer(buffer_size=12, sequence_length=3, n_envs=2)
    streams = CounterStreams(n_envs=2)
    # Env 0 ends an episode every step (2 rows per add), env 1 never (1 row per add).
    for _ in range(3):
        buffer.add(*streams.step([TERMINATE, CONTINUE]))
    np.testing.assert_array_equal(buffer.filled, [6, 4])

    batch = buffer.sample(7000)
    obs = batch.observations.numpy()
    windows = obs[0, :, 1].astype(int) * 100 + obs[0, :, 0].astype(int)
    values, counts = np.unique(windows, return_counts=True)
    # Env 0 has 4 windows (starts 0..3), env 1 has 2 (starts 0..1): 6 windows in all.
    np.testing.assert_array_equal(values, [0, 1, 2, 3, 100, 101])
    np.testing.assert_allclose(counts / len(windows), 1 / 6, rtol=0.1)


def test_terminal_fraction_draws_windows_ending_at_terminals() -> None:
    buffer = make_buffer(buffer_size=40, sequence_length=3, n_envs=2, terminal_fraction=0.25)
    streams = CounterStreams(n_envs=2)
    # Env 0 terminates every 4th step, env 1 times out every 4th step (never terminal).
    for step in range(12):
        ends = [TERMINATE, TIMEOUT] if step % 4 == 3 else [CONTINUE, CONTINUE]
        buffer.add(*streams.step(ends))
    batch = buffer.sample(8000)
    check_batch_against_log(batch, streams, capacity=20)
    last_is_terminal = batch.is_terminal[-1].numpy()  # (B,)
    # The last quarter of the batch ends at a terminal row: env 0's three terminal rows are
    # counters 4, 9 and 14, so the windows starting at counters 2, 7 and 12, equally often.
    assert last_is_terminal[6000:].all()
    starts, counts = np.unique(batch.observations[0, 6000:, 0].numpy(), return_counts=True)
    np.testing.assert_array_equal(starts, [2, 7, 12])
    np.testing.assert_allclose(counts / 2000, 1 / 3, rtol=0.1)
    # The first three quarters are uniform over all 13 + 13 windows, 3 of which end at a terminal.
    assert last_is_terminal[:6000].mean() == pytest.approx(3 / 26, abs=0.02)


def test_terminal_fraction_without_terminals_samples_uniformly() -> None:
    buffer = make_buffer(buffer_size=20, sequence_length=3, n_envs=2, terminal_fraction=0.5)
    reference = make_buffer(buffer_size=20, sequence_length=3, n_envs=2)
    streams = CounterStreams(n_envs=2)
    for step in range(8):
        args = streams.step([TIMEOUT, CONTINUE] if step == 3 else [CONTINUE, CONTINUE])
        buffer.add(*args)
        reference.add(*args)
    for expected, actual in zip(reference.sample(16), buffer.sample(16), strict=True):
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_windows_never_span_write_head() -> None:
    capacity, n_envs = 9, 3
    buffer = make_buffer(buffer_size=capacity * n_envs, sequence_length=4, n_envs=n_envs)
    streams = CounterStreams(n_envs=n_envs)
    rng = np.random.default_rng(1)
    for _ in range(40):
        buffer.add(*streams.step(rng.choice([CONTINUE, TERMINATE, TIMEOUT], size=n_envs, p=[0.7, 0.15, 0.15])))
        if buffer.can_sample():
            check_batch_against_log(buffer.sample(32), streams, capacity)


def test_n_envs_with_episodes_ending_at_different_times() -> None:
    buffer = make_buffer(buffer_size=30, sequence_length=3, n_envs=3)
    streams = CounterStreams(n_envs=3)
    schedule = [
        [CONTINUE, TERMINATE, CONTINUE],
        [TERMINATE, CONTINUE, CONTINUE],
        [CONTINUE, CONTINUE, TIMEOUT],
        [CONTINUE, CONTINUE, CONTINUE],
    ]
    for ends in schedule:
        buffer.add(*streams.step(ends))

    # 1 first row + 4 transitions + one extra first row per episode end.
    np.testing.assert_array_equal(buffer.filled, [6, 6, 6])
    np.testing.assert_array_equal(buffer.is_first[:6, 0], [1, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(buffer.is_first[:6, 1], [1, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(buffer.is_first[:6, 2], [1, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(buffer.is_terminal[:6, 0], [0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(buffer.is_terminal[:6, 1], [0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(buffer.is_terminal[:6].sum(axis=0), [1, 1, 0])
    for e in range(3):
        np.testing.assert_array_equal(buffer.observations[:6, e, 0], np.arange(6))
    check_batch_against_log(buffer.sample(64), streams, capacity=10)


def test_uint8_images_stay_uint8_and_are_stored_once() -> None:
    buffer = make_buffer(
        buffer_size=8, sequence_length=3, n_envs=2, observation_space=IMAGE_SPACE, action_space=DISCRETE_ACTIONS
    )
    assert buffer.observations.dtype == np.uint8
    assert buffer.observations.shape == (4, 2, 1, 8, 8)
    assert not hasattr(buffer, "next_observations")
    image = np.full((2, 1, 8, 8), 7, dtype=np.uint8)
    for step in range(3):
        # Discrete actions come as shape (n_envs,) from SB3.
        buffer.add(image + step, image + step + 1, np.array([1, 3]), np.zeros(2), np.zeros(2), [{}, {}])

    batch = buffer.sample(5)
    assert batch.observations.dtype == torch.uint8
    assert batch.observations.shape == (3, 5, 1, 8, 8)
    assert batch.actions.shape == (3, 5, get_action_dim(DISCRETE_ACTIONS))
    assert set(batch.actions[1:].flatten().tolist()) <= {1.0, 3.0}
    assert (batch.actions[1:] == batch.actions[1:2]).all()  # each window stays in one env's stream


def test_dict_observation_space() -> None:
    space = spaces.Dict({"image": IMAGE_SPACE, "vector": VEC_SPACE})
    buffer = make_buffer(buffer_size=6, sequence_length=2, n_envs=2, observation_space=space)
    assert set(buffer.observations) == {"image", "vector"}
    assert buffer.observations["image"].shape == (3, 2, 1, 8, 8)
    assert buffer.observations["image"].dtype == np.uint8
    for step in range(4):
        obs = {"image": np.full((2, 1, 8, 8), step, np.uint8), "vector": np.full((2, 3), step, np.float32)}
        next_obs = {"image": obs["image"] + 1, "vector": obs["vector"] + 1}
        buffer.add(obs, next_obs, np.ones((2, 2)), np.ones(2), np.zeros(2), [{}, {}])

    batch = buffer.sample(4)
    assert set(batch.observations) == {"image", "vector"}
    assert batch.observations["image"].dtype == torch.uint8
    assert batch.observations["image"].shape == (2, 4, 1, 8, 8)
    assert batch.observations["vector"].shape == (2, 4, 3)
    images = batch.observations["image"][:, :, 0, 0, 0].float()
    torch.testing.assert_close(images, batch.observations["vector"][..., 0])
    torch.testing.assert_close(images[1] - images[0], torch.ones(4))


def test_a_dict_key_named_like_the_internal_box_key_is_kept() -> None:
    space = spaces.Dict({"__box__": VEC_SPACE, "image": IMAGE_SPACE})
    buffer = make_buffer(buffer_size=6, sequence_length=2, observation_space=space)
    for step in range(3):
        obs = {"__box__": np.full((1, 3), step, np.float32), "image": np.full((1, 1, 8, 8), step, np.uint8)}
        buffer.add(obs, obs, np.ones((1, 2)), np.ones(1), np.zeros(1), [{}])
    batch = buffer.sample(2)
    assert set(batch.observations) == {"__box__", "image"}
    torch.testing.assert_close(
        batch.observations["image"][:, :, 0, 0, 0].float(), batch.observations["__box__"][..., 0]
    )


RGB_SPACE = spaces.Box(0, 255, shape=(3, 8, 8), dtype=np.uint8)


@pytest.mark.parametrize(
    "obs, error, message",
    [
        (np.zeros((2, 8, 8, 3), np.uint8), ValueError, r"shape \(2, 8, 8, 3\), expected \(2, 3, 8, 8\)"),
        (np.zeros((2, 192), np.uint8), ValueError, "shape"),
        (np.full((2, 3, 8, 8), 0.5, np.float32), TypeError, "dtype float32 for a space of dtype uint8"),
    ],
)
def test_wrong_observation_layouts_and_dtypes_are_refused(obs: np.ndarray, error: type, message: str) -> None:
    buffer = make_buffer(
        buffer_size=8, sequence_length=2, n_envs=2, observation_space=RGB_SPACE, action_space=DISCRETE_ACTIONS
    )
    actions, zeros = np.array([1, 3]), np.zeros(2)
    with pytest.raises(error, match=message):
        buffer.add(obs, obs, actions, zeros, zeros, [{}, {}])
    assert buffer.filled.tolist() == [0, 0]
    # dimensions of size one may differ, as SB3's vectorised envs hand them over
    single = make_buffer(buffer_size=8, sequence_length=2, observation_space=RGB_SPACE, action_space=DISCRETE_ACTIONS)
    image = np.zeros((3, 8, 8), np.uint8)
    single.add(image, image, np.array(1), np.zeros(1), np.zeros(1), [{}])
    assert single.filled.tolist() == [2]  # the first step stores its start and next observation


def test_sample_tensor_types() -> None:
    buffer = make_buffer(buffer_size=10, sequence_length=4)
    streams = CounterStreams(n_envs=1)
    for _ in range(4):
        buffer.add(*streams.step([CONTINUE]))
    batch = buffer.sample(3)
    assert isinstance(batch, SequenceBatch)
    assert batch.observations.shape == (4, 3, 3)
    assert batch.actions.shape == (4, 3, 2)
    for tensor in (batch.rewards, batch.is_first, batch.is_terminal):
        assert tensor.shape == (4, 3)
    for tensor in batch:
        assert tensor.dtype == torch.float32
        assert tensor.device == buffer.device


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            dict(buffer_size=10, sequence_length=6, n_envs=2),
            r"sequence_length \(6\) is longer than buffer_size // n_envs \(5\)",
        ),
        (dict(buffer_size=10, sequence_length=2, optimize_memory_usage=True), "optimize_memory_usage"),
        (dict(buffer_size=0, sequence_length=1), "buffer_size"),
        (dict(buffer_size=10, sequence_length=1, n_envs=0), "n_envs"),
        (dict(buffer_size=10, sequence_length=0), "sequence_length"),
        (dict(buffer_size=10, sequence_length=2, terminal_fraction=-0.1), "terminal_fraction"),
        (dict(buffer_size=10, sequence_length=2, terminal_fraction=1.5), "terminal_fraction"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_buffer(**kwargs)


@pytest.mark.parametrize(
    "space",
    [spaces.Discrete(3), spaces.Dict({"ok": VEC_SPACE, "bad": spaces.Discrete(3)}), spaces.Tuple((VEC_SPACE,))],
)
def test_unsupported_observation_space(space: spaces.Space) -> None:
    with pytest.raises(TypeError, match="Discrete|Tuple"):
        make_buffer(buffer_size=10, sequence_length=2, observation_space=space)


@pytest.mark.parametrize("field", ["obs", "next_obs", "reward"])
@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_inputs_are_rejected(field: str, bad_value: float) -> None:
    buffer = make_buffer(buffer_size=10, sequence_length=2, n_envs=2)
    streams = CounterStreams(n_envs=2)
    buffer.add(*streams.step([CONTINUE, CONTINUE]))
    obs, next_obs, action, reward, done, infos = streams.step([CONTINUE, CONTINUE])
    args = dict(obs=obs, next_obs=next_obs, action=action, reward=reward, done=done, infos=infos)
    args[field] = args[field].copy()
    args[field].flat[1] = bad_value
    with pytest.raises(ValueError, match="non-finite .* from the environment"):
        buffer.add(**args)
    assert buffer.size() == 4, "a rejected step must not be partially written"


def test_non_finite_action_is_rejected() -> None:
    buffer = make_buffer(buffer_size=10, sequence_length=2)
    with pytest.raises(ValueError, match="non-finite action"):
        buffer.add(np.zeros((1, 3)), np.zeros((1, 3)), np.array([[np.nan, 0.0]]), np.zeros(1), np.zeros(1), [{}])


def test_sampling_too_early_raises() -> None:
    buffer = make_buffer(buffer_size=20, sequence_length=5, n_envs=2)
    streams = CounterStreams(n_envs=2)
    for _ in range(3):
        buffer.add(*streams.step([CONTINUE, CONTINUE]))
    assert not buffer.can_sample()
    with pytest.raises(ValueError, match="holds 4 rows, sequence_length=5"):
        buffer.sample(1)
    buffer.add(*streams.step([CONTINUE, CONTINUE]))
    assert buffer.can_sample()
    buffer.sample(1)


def test_reset_empties_buffer() -> None:
    buffer = make_buffer(buffer_size=10, sequence_length=2, n_envs=2)
    streams = CounterStreams(n_envs=2)
    for _ in range(3):
        buffer.add(*streams.step([CONTINUE, CONTINUE]))
    buffer.reset()
    assert buffer.size() == 0
    assert not buffer.can_sample()
    np.testing.assert_array_equal(buffer.positions, [0, 0])
    assert buffer._needs_first.all()
    buffer.add(*streams.step([CONTINUE, CONTINUE]))
    np.testing.assert_array_equal(buffer.is_first[:2], [[True, True], [False, False]])


def test_terminal_fraction_ignores_terminal_rows_left_from_before_a_reset() -> None:
    buffer = make_buffer(buffer_size=10, sequence_length=2, terminal_fraction=1.0)
    streams = CounterStreams(n_envs=1)
    for _ in range(4):
        buffer.add(*streams.step([TERMINATE]))
    buffer.reset()
    streams = CounterStreams(n_envs=1)
    buffer.add(*streams.step([CONTINUE]))
    buffer.add(*streams.step([CONTINUE]))
    # Rows 3, 5 and 7 still hold stale terminal flags, beyond the 3 rows filled since the reset.
    assert buffer.is_terminal[3:].any()
    batch = buffer.sample(32)
    check_batch_against_log(batch, streams, capacity=10)
    assert not batch.is_terminal.any()


def test_save_load_round_trip_restores_sampler(tmp_path) -> None:
    buffer = make_buffer(buffer_size=20, sequence_length=3, n_envs=2)
    streams = CounterStreams(n_envs=2)
    for _ in range(8):
        buffer.add(*streams.step([CONTINUE, TERMINATE]))
    buffer.sample(4)  # advance the rng away from its seeded state
    path = tmp_path / "buffer.pkl"
    save_to_pkl(path, buffer)
    loaded = load_from_pkl(path)

    for _ in range(3):
        expected, actual = buffer.sample(6), loaded.sample(6)
        for expected_tensor, actual_tensor in zip(expected, actual, strict=True):
            torch.testing.assert_close(actual_tensor, expected_tensor, rtol=0, atol=0)
    np.testing.assert_array_equal(loaded.positions, buffer.positions)
    np.testing.assert_array_equal(loaded._needs_first, buffer._needs_first)


def test_sb3_single_position_and_full_flag_are_refused_not_stale(tmp_path) -> None:
    """SB3's ``pos`` and ``full`` stayed at 0 and False here (streams have their own positions),
    so code reading them got silently wrong values; now it gets an error naming what to read."""
    buffer = make_buffer(buffer_size=20, sequence_length=3, n_envs=2)
    streams = CounterStreams(n_envs=2)
    for _ in range(12):
        buffer.add(*streams.step([CONTINUE, TERMINATE]))
    old_format = buffer.__getstate__() | {"pos": 0, "full": False}  # a pickle of before they were dropped
    unpickled = SequenceReplayBuffer.__new__(SequenceReplayBuffer)
    unpickled.__setstate__(old_format)
    buffer_after_reset = make_buffer(buffer_size=20, sequence_length=3, n_envs=2)
    buffer_after_reset.reset()
    for refusing in (buffer, unpickled, buffer_after_reset):
        for name in ("pos", "full"):
            with pytest.raises(AttributeError, match="positions"):
                getattr(refusing, name)
    with pytest.raises(AttributeError, match="no attribute 'elsewhere'"):
        buffer.elsewhere  # noqa: B018 (other missing attributes keep the usual error)


def _assert_same_rows(loaded: SequenceReplayBuffer, buffer: SequenceReplayBuffer) -> None:
    for name in ("actions", "rewards", "is_first", "is_terminal", "positions", "filled"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(buffer, name), err_msg=name)


@pytest.mark.parametrize("dict_obs", [False, True])
def test_pickle_holds_the_stored_rows_not_the_capacity(tmp_path, dict_obs: bool) -> None:
    image_space = spaces.Box(0, 255, (3, 16, 16), np.uint8)
    space = spaces.Dict({"image": image_space, "vec": VEC_SPACE}) if dict_obs else image_space
    capacity = 5_000  # 3.8 MB of frames per stream at full capacity
    buffer = make_buffer(buffer_size=2 * capacity, sequence_length=3, n_envs=2, observation_space=space)

    def add_steps(target: SequenceReplayBuffer, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(n):
            obs = {"image": rng.integers(0, 256, (2, 3, 16, 16), np.uint8), "vec": rng.normal(size=(2, 3))}
            obs = obs if dict_obs else obs["image"]
            target.add(obs, obs, rng.uniform(-1, 1, (2, 2)), rng.normal(size=2), np.array([False, False]), [{}, {}])

    def frames(target: SequenceReplayBuffer) -> np.ndarray:
        return target.observations["image"] if dict_obs else target.observations

    add_steps(buffer, 40, seed=0)
    path = tmp_path / "buffer.pkl"
    save_to_pkl(path, buffer)
    assert path.stat().st_size < 41 * 2 * 768 + 10_000  # the 41 stored rows, not 7.7 MB of zeros
    loaded = load_from_pkl(path)

    assert frames(loaded).shape == frames(buffer).shape == (capacity, 2, 3, 16, 16)
    np.testing.assert_array_equal(frames(loaded), frames(buffer))
    if dict_obs:
        np.testing.assert_array_equal(loaded.observations["vec"], buffer.observations["vec"])
    _assert_same_rows(loaded, buffer)
    # the loaded buffer goes on storing and sampling like the original
    add_steps(buffer, 5, seed=1)
    add_steps(loaded, 5, seed=1)
    _assert_same_rows(loaded, buffer)
    for expected, actual in zip(buffer.sample(6), loaded.sample(6), strict=True):
        if isinstance(expected, dict):
            for key in expected:
                torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0)
        else:
            torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_a_full_ring_buffer_and_an_uncompacted_pickle_load_unchanged(tmp_path) -> None:
    buffer = make_buffer(buffer_size=10, sequence_length=3)
    streams = CounterStreams(n_envs=1)
    for _ in range(23):  # wraps around the 10 rows twice
        buffer.add(*streams.step([CONTINUE]))
    path = tmp_path / "buffer.pkl"
    save_to_pkl(path, buffer)
    loaded = load_from_pkl(path)
    _assert_same_rows(loaded, buffer)
    np.testing.assert_array_equal(loaded.observations, buffer.observations)
    # streams at different fill levels: env 1 stores a reset row after each of its episodes
    uneven = make_buffer(buffer_size=40, sequence_length=2, n_envs=2)
    streams = CounterStreams(n_envs=2)
    for _ in range(6):
        uneven.add(*streams.step([CONTINUE, TERMINATE]))
    assert uneven.filled.tolist() == [7, 12]
    save_to_pkl(path, uneven)
    loaded = load_from_pkl(path)
    _assert_same_rows(loaded, uneven)
    np.testing.assert_array_equal(loaded.observations, uneven.observations)
    for expected, actual in zip(uneven.sample(8), loaded.sample(8), strict=True):
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    # a pickle of the full arrays (the format before compact pickling) loads the same rows
    partly_filled = make_buffer(buffer_size=10, sequence_length=3)
    streams = CounterStreams(n_envs=1)
    for _ in range(4):
        partly_filled.add(*streams.step([CONTINUE]))
    state = dict(partly_filled.__dict__)
    stored = int(partly_filled.filled.max())
    for name in ("observations", "actions", "rewards"):  # the unused rows of the old pickle hold garbage
        state[name] = state[name].copy()
        state[name][stored:] = 7.0
    old_format = SequenceReplayBuffer.__new__(SequenceReplayBuffer)
    old_format.__setstate__(state)
    assert old_format.observations.shape == (10, 1, 3) and old_format.actions.shape == (10, 1, 2)
    np.testing.assert_array_equal(old_format.observations, partly_filled.observations)  # unused rows zero again
    np.testing.assert_array_equal(old_format.actions, partly_filled.actions)
    np.testing.assert_array_equal(old_format.rewards, partly_filled.rewards)
    _assert_same_rows(old_format, partly_filled)


def test_seed_makes_sampling_reproducible() -> None:
    buffer = make_buffer(buffer_size=20, sequence_length=3, n_envs=2)
    streams = CounterStreams(n_envs=2)
    for _ in range(8):
        buffer.add(*streams.step([CONTINUE, CONTINUE]))
    buffer.seed(123)
    first = buffer.sample(16)
    buffer.seed(123)
    second = buffer.sample(16)
    torch.testing.assert_close(second.observations, first.observations, rtol=0, atol=0)
    assert not torch.equal(buffer.sample(16).observations, first.observations)


def test_sample_normalizes_with_vec_normalize() -> None:
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]), norm_obs=True, norm_reward=True)
    venv.obs_rms.mean = np.array([1.0, -2.0, 0.5])
    venv.obs_rms.var = np.array([4.0, 9.0, 0.25])
    venv.ret_rms.var = np.array(16.0)
    buffer = make_buffer(buffer_size=10, sequence_length=3, action_space=venv.action_space)
    streams = CounterStreams(n_envs=1, action_dim=1)
    for _ in range(5):
        buffer.add(*streams.step([CONTINUE]))

    buffer.seed(7)
    raw = buffer.sample(4)
    buffer.seed(7)
    normalized = buffer.sample(4, env=venv)
    np.testing.assert_allclose(normalized.observations.numpy(), venv.normalize_obs(raw.observations.numpy()))
    np.testing.assert_allclose(normalized.rewards.numpy(), venv.normalize_reward(raw.rewards.numpy()))
    torch.testing.assert_close(normalized.actions, raw.actions, rtol=0, atol=0)


def test_bytes_per_step_and_memory_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SequenceReplayBuffer.bytes_per_step(VEC_SPACE, DISCRETE_ACTIONS) == 12 + 4 + 4 + 2
    dict_space = spaces.Dict({"image": IMAGE_SPACE, "vector": VEC_SPACE})
    assert SequenceReplayBuffer.bytes_per_step(dict_space, BOX_ACTIONS) == 64 + 12 + 8 + 4 + 2

    fake_psutil = SimpleNamespace(virtual_memory=lambda: SimpleNamespace(available=1000))
    monkeypatch.setattr(buffers, "psutil", fake_psutil)
    with pytest.warns(UserWarning, match=r"GB > .*GB"):
        make_buffer(buffer_size=50, sequence_length=2, n_envs=2)  # 50 rows * 22 bytes > 1000
    fake_psutil.virtual_memory = lambda: SimpleNamespace(available=10**9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_buffer(buffer_size=50, sequence_length=2, n_envs=2)


ends_strategy = st.sampled_from([CONTINUE, CONTINUE, CONTINUE, TERMINATE, TIMEOUT])


@st.composite
def buffer_scenarios(draw: st.DrawFn) -> tuple[int, int, int, int, float, list[list[int]]]:
    n_envs = draw(st.integers(1, 3))
    capacity = draw(st.integers(1, 8))
    remainder = draw(st.integers(0, n_envs - 1))
    sequence_length = draw(st.integers(1, capacity))
    terminal_fraction = draw(st.sampled_from([0.0, 0.5, 1.0]))
    steps = draw(st.lists(st.lists(ends_strategy, min_size=n_envs, max_size=n_envs), min_size=1, max_size=25))
    return n_envs, capacity, remainder, sequence_length, terminal_fraction, steps


def has_terminal_window(streams: CounterStreams, capacity: int, sequence_length: int) -> bool:
    """Whether some stored window of ``sequence_length`` rows ends at a terminal row, by the log."""
    for log in streams.log:
        oldest_stored = max(len(log) - capacity, 0)
        if any(row["is_terminal"] and c - sequence_length + 1 >= oldest_stored for c, row in log.items()):
            return True
    return False


@settings(max_examples=50, deadline=None)
@given(scenario=buffer_scenarios(), seed=st.integers(0, 2**16))
def test_samples_match_reference_log(scenario: tuple[int, int, int, int, float, list[list[int]]], seed: int) -> None:
    n_envs, capacity, remainder, sequence_length, terminal_fraction, steps = scenario
    buffer = SequenceReplayBuffer(
        capacity * n_envs + remainder,
        VEC_SPACE,
        BOX_ACTIONS,
        device="cpu",
        n_envs=n_envs,
        sequence_length=sequence_length,
        seed=seed,
        terminal_fraction=terminal_fraction,
    )
    streams = CounterStreams(n_envs=n_envs)
    for ends in steps:
        buffer.add(*streams.step(ends))
        rows_written = np.array([len(log) for log in streams.log])
        np.testing.assert_array_equal(buffer.filled, np.minimum(rows_written, capacity))
        assert buffer.size() == np.minimum(rows_written, capacity).sum()
        assert buffer.can_sample() == (rows_written.max() >= sequence_length)
        if buffer.can_sample():
            batch = buffer.sample(8)
            check_batch_against_log(batch, streams, capacity)
            if has_terminal_window(streams, capacity, sequence_length):
                n_terminal = round(terminal_fraction * 8)
                assert batch.is_terminal[-1, 8 - n_terminal :].all()

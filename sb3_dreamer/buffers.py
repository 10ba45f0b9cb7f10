"""Sequence replay buffer for Dreamer's world model.

Each env of the vec-env owns one stream (a ring buffer of ``C = buffer_size // n_envs``
rows). A row holds one observation together with the action that led to it and the
reward received on arriving at it, so every observation is stored exactly once:

=====  ===========  ==============  ======  ========  ===========
row    observation  action          reward  is_first  is_terminal
=====  ===========  ==============  ======  ========  ===========
t      o_0 (reset)  0               0       True      False
t + 1  o_1          a_0             r_1     False     False
t + 2  o_2          a_1             r_2     False     True/False
=====  ===========  ==============  ======  ========  ===========

``is_terminal`` is only set for a true termination; a time-out (``TimeLimit.truncated``)
ends the episode without being terminal. Sequences are sampled as fixed-length windows
of consecutive rows of one stream and may cross episode boundaries (``is_first`` marks
where a new episode starts). By default every valid window is equally likely; with
``terminal_fraction > 0`` that share of each batch is drawn from the windows that end at a
terminal row, so that rare failures (and the states that lead to them) are replayed more often.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer, ReplayBuffer
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.vec_env import VecNormalize

from sb3_dreamer.memory import lazy_zeros

try:
    import psutil
except ImportError:
    psutil = None

ObsArray = np.ndarray | dict[str, np.ndarray]


def _without_ones(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` without its dimensions of size one."""
    return tuple(size for size in shape if size != 1)


# Key under which the single array of a Box observation space is handled internally.
_BOX_KEY = "__box__"


class SequenceBatch(NamedTuple):
    """A batch of time-major sequences sampled from a :class:`SequenceReplayBuffer`.

    Attributes
    ----------
    observations : torch.Tensor or dict of str to torch.Tensor
        Observations, shape ``(L, B, *obs_shape)`` in the stored dtype (uint8 stays
        uint8) unless normalised by a ``VecNormalize``.
    actions : torch.Tensor
        Action that led to each observation (zeros on a first step), shape
        ``(L, B, action_dim)``, float32.
    rewards : torch.Tensor
        Reward received on arriving at each observation (0 on a first step), shape
        ``(L, B)``, float32.
    is_first : torch.Tensor
        1.0 where an observation is the first of its episode, shape ``(L, B)``, float32.
    is_terminal : torch.Tensor
        1.0 where an observation is terminal (not a time-out), shape ``(L, B)``, float32.
    """

    observations: torch.Tensor | dict[str, torch.Tensor]  # (L, B, *obs_shape)
    actions: torch.Tensor  # (L, B, action_dim)
    rewards: torch.Tensor  # (L, B)
    is_first: torch.Tensor  # (L, B)
    is_terminal: torch.Tensor  # (L, B)


def _box_subspaces(observation_space: spaces.Space) -> dict[str, spaces.Box]:
    """Return the Box spaces making up an observation space, keyed by name.

    Parameters
    ----------
    observation_space : gymnasium.spaces.Space
        A ``Box`` or a ``Dict`` of ``Box`` subspaces.

    Returns
    -------
    dict of str to gymnasium.spaces.Box
        ``{_BOX_KEY: space}`` for a Box space, the subspaces for a Dict space.

    Raises
    ------
    TypeError
        If the space (or one of its subspaces) is not supported.
    """
    if isinstance(observation_space, spaces.Box):
        return {_BOX_KEY: observation_space}
    if isinstance(observation_space, spaces.Dict):
        for key, subspace in observation_space.spaces.items():
            if not isinstance(subspace, spaces.Box):
                raise TypeError(
                    f"SequenceReplayBuffer only supports Box subspaces in a Dict observation space, "
                    f"got {subspace} for key {key!r}"
                )
        return dict(observation_space.spaces)
    raise TypeError(
        f"SequenceReplayBuffer only supports Box or Dict-of-Box observation spaces, got {observation_space}"
    )


#: The per-row arrays of :class:`SequenceReplayBuffer` besides its observations, ``(C, n_envs, ...)``.
_ROW_ARRAYS = ("actions", "rewards", "is_first", "is_terminal")

#: SB3's single write position and full flag, which per-env streams of their own lengths do not
#: have: :class:`SequenceReplayBuffer` drops them (reading one raises ``AttributeError``).
_SB3_COUNTERS = ("pos", "full")


class SequenceReplayBuffer(ReplayBuffer):
    """Replay buffer of per-env streams, sampled as fixed-length sequences.

    Parameters
    ----------
    buffer_size : int
        Total number of rows over all envs; each env stream holds
        ``buffer_size // n_envs`` rows (stored as ``self.buffer_size``, as in SB3's
        ``ReplayBuffer``).
    observation_space : gymnasium.spaces.Space
        A ``Box`` (any shape and dtype) or a ``Dict`` of ``Box`` subspaces.
    action_space : gymnasium.spaces.Space
        Action space; actions are stored as float32 vectors of ``get_action_dim``.
    device : torch.device or str, default "auto"
        Device the sampled tensors are put on.
    n_envs : int, default 1
        Number of parallel environments (one stream each).
    optimize_memory_usage : bool, default False
        Must be False: observations are already stored only once.
    handle_timeout_termination : bool, default True
        If True, an episode end flagged ``TimeLimit.truncated`` is not terminal.
    sequence_length : int, default 64
        Length ``L`` of the sampled sequences.
    seed : int or None, default None
        Seed of the buffer's own random generator ``self.rng``.
    terminal_fraction : float, default 0.0
        Share of each sampled batch drawn uniformly from the windows whose last row is
        terminal (rounded to whole sequences); the rest is drawn uniformly from all windows.
        While no such window exists, the whole batch is uniform. 0 samples uniformly, as
        the papers do.

    Raises
    ------
    ValueError
        On a non-positive size, ``sequence_length`` longer than a stream,
        ``optimize_memory_usage=True`` or ``terminal_fraction`` outside ``[0, 1]``.
    TypeError
        On an unsupported observation space.
    """

    observations: ObsArray  # (C, n_envs, *obs_shape), dict of those for Dict spaces
    actions: np.ndarray  # (C, n_envs, action_dim) float32
    rewards: np.ndarray  # (C, n_envs) float32
    is_first: np.ndarray  # (C, n_envs) bool
    is_terminal: np.ndarray  # (C, n_envs) bool
    positions: np.ndarray  # (n_envs,) int64, next row written per stream
    filled: np.ndarray  # (n_envs,) int64, rows stored per stream (<= C)
    _needs_first: np.ndarray  # (n_envs,) bool, next add starts a new episode
    rng: np.random.Generator

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: torch.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        sequence_length: int = 64,
        seed: int | None = None,
        terminal_fraction: float = 0.0,
    ) -> None:
        subspaces = _box_subspaces(observation_space)
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        if n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        if sequence_length < 1:
            raise ValueError(f"sequence_length must be >= 1, got {sequence_length}")
        capacity = buffer_size // n_envs
        if sequence_length > capacity:
            raise ValueError(f"sequence_length ({sequence_length}) is longer than buffer_size // n_envs ({capacity})")
        if optimize_memory_usage:
            raise ValueError(
                "SequenceReplayBuffer does not support optimize_memory_usage=True: "
                "observations are already stored only once"
            )
        if not 0.0 <= terminal_fraction <= 1.0:
            raise ValueError(f"terminal_fraction must be in [0, 1], got {terminal_fraction}")
        # ReplayBuffer.__init__ would allocate next_observations, which this buffer does not need.
        BaseBuffer.__init__(self, buffer_size, observation_space, action_space, device, n_envs=n_envs)
        self.buffer_size = capacity
        self.optimize_memory_usage = False
        self.handle_timeout_termination = handle_timeout_termination
        self.sequence_length = sequence_length
        self.terminal_fraction = float(terminal_fraction)

        if psutil is not None:
            total_bytes = self.bytes_per_step(observation_space, action_space) * capacity * n_envs
            available_bytes = psutil.virtual_memory().available
            if total_bytes > available_bytes:
                warnings.warn(
                    "This system does not have apparently enough memory to store the complete "
                    f"replay buffer {total_bytes / 1e9:.2f}GB > {available_bytes / 1e9:.2f}GB"
                )

        # rows in their own memory maps: unwritten rows cost no memory, whatever the allocator does
        obs_store = {key: lazy_zeros((capacity, n_envs, *space.shape), space.dtype) for key, space in subspaces.items()}
        self.observations = self._from_fields(obs_store)
        self.actions = lazy_zeros((capacity, n_envs, self.action_dim), np.float32)
        self.rewards = lazy_zeros((capacity, n_envs), np.float32)
        self.is_first = lazy_zeros((capacity, n_envs), bool)
        self.is_terminal = lazy_zeros((capacity, n_envs), bool)
        self.positions = np.zeros(n_envs, dtype=np.int64)
        self.filled = np.zeros(n_envs, dtype=np.int64)
        self._needs_first = np.ones(n_envs, dtype=bool)
        self.rng = np.random.default_rng(seed)
        self._drop_sb3_counters()

    def _drop_sb3_counters(self) -> None:
        """Remove the ``pos`` and ``full`` that SB3's ``BaseBuffer`` sets and never updates here."""
        for name in _SB3_COUNTERS:
            self.__dict__.pop(name, None)

    def __getattr__(self, name: str) -> Any:
        """Only reached for missing attributes: say where SB3's ``pos`` and ``full`` went."""
        if name in _SB3_COUNTERS:
            raise AttributeError(
                f"SequenceReplayBuffer has no single {name!r}: each env stream has its own write position "
                "(positions) and number of stored rows (filled, at most buffer_size); size() counts the rows "
                "of all streams"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getstate__(self) -> dict[str, Any]:
        """Pickle only the rows written so far (``save_replay_buffer``).

        The arrays are allocated at full capacity up front; the unused rows are never touched, so
        they cost no memory, but pickling them would write zeros (12 GB for the default 1M rows of
        64x64 RGB frames, whatever the number of steps stored). ``__setstate__`` restores the
        capacity.
        """
        state = self.__dict__.copy()
        stored = int(self.filled.max())  # rows [0, stored) of the row axis hold data in some stream
        for name in _ROW_ARRAYS:
            state[name] = state[name][:stored]
        if isinstance(self.observations, dict):
            state["observations"] = {key: value[:stored] for key, value in self.observations.items()}
        else:
            state["observations"] = self.observations[:stored]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle, growing the row arrays back to the capacity ``buffer_size``.

        The rows past the stored ones are fresh, untouched zeros again; a pickle of the full
        arrays (as written before compact pickling) loads too, and its unused rows are dropped the
        same way.
        """
        capacity = state["buffer_size"]
        stored = int(state["filled"].max())

        def grown(rows: np.ndarray) -> np.ndarray:
            """``(stored or more, ...)`` -> ``(capacity, ...)``: the stored rows, then fresh zeros."""
            if stored == capacity:
                return rows
            full = lazy_zeros((capacity, *rows.shape[1:]), rows.dtype)
            full[:stored] = rows[:stored]
            return full

        for name in _ROW_ARRAYS:
            state[name] = grown(state[name])
        observations = state["observations"]
        if isinstance(observations, dict):
            state["observations"] = {key: grown(value) for key, value in observations.items()}
        else:
            state["observations"] = grown(observations)
        self.__dict__.update(state)
        self._drop_sb3_counters()  # pickles of before they were dropped hold them

    @staticmethod
    def bytes_per_step(observation_space: spaces.Space, action_space: spaces.Space) -> int:
        """Bytes that one stored env step (one row) costs.

        Parameters
        ----------
        observation_space : gymnasium.spaces.Space
            A ``Box`` or a ``Dict`` of ``Box`` subspaces.
        action_space : gymnasium.spaces.Space
            Action space.

        Returns
        -------
        int
            Observation bytes + float32 action + float32 reward + two bool flags.
        """
        obs_bytes = sum(
            int(np.prod(space.shape)) * space.dtype.itemsize for space in _box_subspaces(observation_space).values()
        )
        return obs_bytes + 4 * get_action_dim(action_space) + 4 + 2

    def seed(self, seed: int | None) -> None:
        """Re-create the buffer's random generator.

        Parameters
        ----------
        seed : int or None
            Seed for ``np.random.default_rng``.
        """
        self.rng = np.random.default_rng(seed)

    def size(self) -> int:
        """Total number of stored rows over all env streams.

        Returns
        -------
        int
            Sum of ``self.filled``.
        """
        return int(self.filled.sum())

    def can_sample(self) -> bool:
        """Whether some env stream holds at least ``sequence_length`` rows.

        Returns
        -------
        bool
            True if :meth:`sample` can be called.
        """
        return bool(self.filled.max() >= self.sequence_length)

    def start_new_episodes(self) -> None:
        """Mark every stream so that the next :meth:`add` stores its ``obs`` as an episode start.

        Call it whenever the environments are reset outside the buffer's view (a new ``learn``
        with ``reset_num_timesteps=True``, a loaded buffer on a fresh env).
        """
        self._needs_first[:] = True

    def reset(self) -> None:
        """Empty every stream; the next :meth:`add` starts new episodes."""
        super().reset()
        self._drop_sb3_counters()
        self.positions[:] = 0
        self.filled[:] = 0
        self._needs_first[:] = True

    def add(
        self,
        obs: ObsArray,
        next_obs: ObsArray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Store one vec-env step.

        Envs that start a new episode first get a row with ``obs`` (``is_first``, zero
        action and reward); then every env gets a row with ``next_obs``, ``action`` and
        ``reward``, terminal when ``done`` and not a time-out.

        Parameters
        ----------
        obs : numpy.ndarray or dict of str to numpy.ndarray
            Observations the actions were taken in, shape ``(n_envs, *obs_shape)``.
        next_obs : numpy.ndarray or dict of str to numpy.ndarray
            Resulting observations (terminal observations for done envs),
            shape ``(n_envs, *obs_shape)``.
        action : numpy.ndarray
            Actions, reshapeable to ``(n_envs, action_dim)``.
        reward : numpy.ndarray
            Rewards, shape ``(n_envs,)``.
        done : numpy.ndarray
            Episode ends (terminations and time-outs), shape ``(n_envs,)``.
        infos : list of dict
            Per-env infos; ``"TimeLimit.truncated"`` marks a time-out.

        Raises
        ------
        ValueError
            If an observation, reward or action is not finite (nothing is written).
        """
        obs_fields = self._prepare_obs(obs)  # key -> (n_envs, *shape)
        next_obs_fields = self._prepare_obs(next_obs)  # key -> (n_envs, *shape)
        action = np.asarray(action, dtype=np.float32).reshape(self.n_envs, self.action_dim)
        reward = np.asarray(reward, dtype=np.float32).reshape(self.n_envs)
        done = np.asarray(done, dtype=bool).reshape(self.n_envs)
        for name, fields in (("observation", obs_fields), ("next observation", next_obs_fields)):
            for key, value in fields.items():
                if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                    raise ValueError(f"non-finite {name}{self._where(key)} from the environment")
        if not np.isfinite(reward).all():
            raise ValueError(f"non-finite reward {reward} from the environment")
        if not np.isfinite(action).all():
            raise ValueError(f"non-finite action {action} from the policy")

        if self.handle_timeout_termination:
            timeout = np.array([info.get("TimeLimit.truncated", False) for info in infos], dtype=bool)
        else:
            timeout = np.zeros(self.n_envs, dtype=bool)

        first_envs = np.flatnonzero(self._needs_first)  # (F,)
        self._write_rows(
            first_envs,
            {key: value[first_envs] for key, value in obs_fields.items()},
            np.zeros((len(first_envs), self.action_dim), dtype=np.float32),
            np.zeros(len(first_envs), dtype=np.float32),
            is_first=True,
            is_terminal=np.zeros(len(first_envs), dtype=bool),
        )
        self._write_rows(
            np.arange(self.n_envs),
            next_obs_fields,
            action,
            reward,
            is_first=False,
            is_terminal=done & ~timeout,
        )
        self._needs_first = done.copy()

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> SequenceBatch:
        """Sample sequences uniformly over all valid windows of all env streams.

        With ``terminal_fraction > 0``, ``round(terminal_fraction * batch_size)`` of them (Python's
        ``round``: halves go to the even count, so 0.25 of 2 is 0 and 0.25 of 10 is 2) are instead
        drawn uniformly from the windows that end at a terminal row (if any).

        Parameters
        ----------
        batch_size : int
            Number ``B`` of sequences.
        env : VecNormalize or None, default None
            If given, used to normalise observations and rewards.

        Returns
        -------
        SequenceBatch
            Time-major tensors of shape ``(L, B, ...)`` on ``self.device``.

        Raises
        ------
        ValueError
            If no stream holds ``sequence_length`` rows yet.
        """
        if not self.can_sample():
            raise ValueError(
                f"cannot sample yet: the fullest env stream holds {self.filled.max()} rows, "
                f"sequence_length={self.sequence_length} rows are needed"
            )
        n_windows_total = int(self._n_windows().sum())
        n_terminal = round(self.terminal_fraction * batch_size)
        terminal_windows = self._terminal_window_inds() if n_terminal else None  # (W_term,)
        window_inds = self.rng.integers(0, n_windows_total, size=batch_size)  # (B,)
        if terminal_windows is not None and len(terminal_windows):
            picks = self.rng.integers(0, len(terminal_windows), size=n_terminal)  # (B_term,)
            window_inds[batch_size - n_terminal :] = terminal_windows[picks]
        return self._get_samples(window_inds, env=env)

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env: VecNormalize | None = None
    ) -> SequenceBatch:
        """Gather the windows with the given indices.

        Windows are numbered stream after stream, oldest start first, so that index
        ``i`` in ``[0, total number of valid windows)`` names exactly one window.

        Parameters
        ----------
        batch_inds : numpy.ndarray
            Window indices, shape ``(B,)``.
        env : VecNormalize or None, default None
            If given, used to normalise observations and rewards.

        Returns
        -------
        SequenceBatch
            Time-major tensors of shape ``(L, B, ...)`` on ``self.device``.
        """
        n_windows = self._n_windows()  # (n_envs,)
        window_ends = np.cumsum(n_windows)  # (n_envs,)
        envs = np.searchsorted(window_ends, batch_inds, side="right")  # (B,)
        offsets = batch_inds - (window_ends[envs] - n_windows[envs])  # (B,)
        oldest_rows = np.where(self.filled == self.buffer_size, self.positions, 0)  # (n_envs,)
        steps = np.arange(self.sequence_length)[:, None]  # (L, 1)
        rows = (oldest_rows[envs] + offsets + steps) % self.buffer_size  # (L, B)
        cols = envs[None, :]  # (1, B)

        obs = {key: store[rows, cols] for key, store in self._obs_fields(self.observations).items()}
        normalized_obs = self._normalize_obs(self._from_fields(obs), env)
        normalized_fields = self._obs_fields(normalized_obs)
        obs_tensors = {key: self.to_torch(value, copy=False) for key, value in normalized_fields.items()}
        return SequenceBatch(
            observations=self._from_fields(obs_tensors),
            actions=self.to_torch(self.actions[rows, cols], copy=False),
            rewards=self.to_torch(self._normalize_reward(self.rewards[rows, cols], env), copy=False),
            is_first=self.to_torch(self.is_first[rows, cols].astype(np.float32), copy=False),
            is_terminal=self.to_torch(self.is_terminal[rows, cols].astype(np.float32), copy=False),
        )

    def _terminal_window_inds(self) -> np.ndarray:
        """Indices (numbered as in :meth:`_get_samples`) of the valid windows ending at a terminal row.

        Returns
        -------
        numpy.ndarray
            Window indices, shape ``(W_term,)``, int64.
        """
        rows, envs = np.nonzero(self.is_terminal)  # (K,), (K,) physical positions
        oldest_rows = np.where(self.filled == self.buffer_size, self.positions, 0)  # (n_envs,)
        ages = (rows - oldest_rows[envs]) % self.buffer_size  # (K,) rows since the oldest one
        offsets = ages - (self.sequence_length - 1)  # (K,) start of the window ending there
        valid = (offsets >= 0) & (ages < self.filled[envs])  # rows past `filled` are stale
        n_windows = self._n_windows()  # (n_envs,)
        first_window = np.cumsum(n_windows) - n_windows  # (n_envs,)
        return (first_window[envs[valid]] + offsets[valid]).astype(np.int64)

    def _n_windows(self) -> np.ndarray:
        """Number of valid windows per env stream, shape ``(n_envs,)``."""
        return np.maximum(self.filled - self.sequence_length + 1, 0)

    @staticmethod
    def _obs_fields(obs: ObsArray) -> dict[str, np.ndarray]:
        """View an observation array (or dict of arrays) as a dict keyed like the storage."""
        return dict(obs) if isinstance(obs, dict) else {_BOX_KEY: obs}

    def _from_fields(self, fields: dict[str, Any]) -> Any:
        """Inverse of :meth:`_obs_fields`: the dict itself for a Dict space, its one value otherwise."""
        return fields if isinstance(self.observation_space, spaces.Dict) else fields[_BOX_KEY]

    def _where(self, key: str) -> str:
        """`` (key 'k')`` for a Dict space's key in messages, nothing for a Box space."""
        return f" (key {key!r})" if isinstance(self.observation_space, spaces.Dict) else ""

    def _prepare_obs(self, obs: ObsArray) -> dict[str, np.ndarray]:
        """Cast a batch of observations to the stored dtypes and shapes ``(n_envs, *shape)``.

        Only dimensions of size one may differ from the stored shape (SB3's vectorised envs add or
        drop them); anything else, e.g. a channel-last image for a channel-first space, and float
        values for an integer (image) space raise instead of being reshaped or cast into garbage.
        """
        stores = self._obs_fields(self.observations)
        fields = self._obs_fields(obs)
        prepared = {}
        for key, store in stores.items():
            value = np.asarray(fields[key])
            shape = (self.n_envs, *store.shape[2:])
            if _without_ones(value.shape) != _without_ones(shape):
                raise ValueError(f"observation{self._where(key)} of shape {value.shape}, expected {shape}")
            if store.dtype.kind in "iu" and value.dtype.kind not in "biu":
                raise TypeError(
                    f"observation{self._where(key)} of dtype {value.dtype} for a space of dtype {store.dtype}"
                )
            prepared[key] = value.astype(store.dtype, copy=False).reshape(shape)
        return prepared

    def _write_rows(
        self,
        envs: np.ndarray,
        obs: dict[str, np.ndarray],
        action: np.ndarray,
        reward: np.ndarray,
        is_first: bool,
        is_terminal: np.ndarray,
    ) -> None:
        """Write one row at the write head of each given env stream and advance it.

        Parameters
        ----------
        envs : numpy.ndarray
            Env indices, shape ``(E,)``.
        obs : dict of str to numpy.ndarray
            Observations keyed like the storage, shape ``(E, *shape)``.
        action : numpy.ndarray
            Actions, shape ``(E, action_dim)``.
        reward : numpy.ndarray
            Rewards, shape ``(E,)``.
        is_first : bool
            First-step flag of all written rows.
        is_terminal : numpy.ndarray
            Terminal flags, shape ``(E,)``.
        """
        rows = self.positions[envs]  # (E,)
        for key, store in self._obs_fields(self.observations).items():
            store[rows, envs] = obs[key]
        self.actions[rows, envs] = action
        self.rewards[rows, envs] = reward
        self.is_first[rows, envs] = is_first
        self.is_terminal[rows, envs] = is_terminal
        self.positions[envs] = (rows + 1) % self.buffer_size
        self.filled[envs] = np.minimum(self.filled[envs] + 1, self.buffer_size)

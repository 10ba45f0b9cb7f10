"""Imagination videos: real frames, the world model's reconstruction and open-loop prediction.

Each frame stacks three rows — the real observation, the model's output (reconstruction while
observing the first ``context`` steps, open-loop prediction from the logged actions after that)
and the absolute error — with ``n_sequences`` replayed sequences side by side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sb3_dreamer.buffers import SequenceReplayBuffer
from sb3_dreamer.networks import as_dict
from sb3_dreamer.policies import DreamerPolicy


def imagination_frames(
    policy: DreamerPolicy,
    replay_buffer: SequenceReplayBuffer,
    context: int = 5,
    n_sequences: int = 4,
    key: str | None = None,
) -> np.ndarray:
    """Video frames ``(T, 3*H, n_sequences*W, C)`` uint8 for one image input of the policy.

    :param key: image key for Dict observations (default: the first image key)
    """
    image_keys = policy.world_model.decoder.image_keys
    if not image_keys:
        raise ValueError("imagination videos need image observations (CnnPolicy or MultiInputPolicy)")
    key = key or image_keys[0]
    if key not in image_keys:
        raise ValueError(f"{key!r} is not an image input; image inputs: {image_keys}")
    batch = replay_buffer.sample(n_sequences)
    predictions = policy.world_model.open_loop(
        batch.observations, policy.encode_actions(batch.actions), batch.is_first, context
    )[key]  # (T, B, C, H, W)
    real = as_dict(batch.observations)[key].float() / 255.0
    rows = torch.stack([real, predictions, (real - predictions).abs()], dim=2)  # (T, B, 3, C, H, W)
    steps, batch_size, _, channels, height, width = rows.shape
    # (T, 3, H, B, W, C) -> (T, 3*H, B*W, C)
    grid = rows.permute(0, 2, 4, 1, 5, 3).reshape(steps, 3 * height, batch_size * width, channels)
    return (grid.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu().numpy()


def write_imagination_gif(
    model: "Dreamer",  # noqa: F821 - avoid a circular import
    path: str | Path,
    context: int = 5,
    n_sequences: int = 4,
    fps: int = 8,
    key: str | None = None,
) -> Path:
    """Write :func:`imagination_frames` of a trained ``Dreamer`` (from its replay buffer) as a GIF."""
    from PIL import Image

    frames = imagination_frames(model.policy, model.replay_buffer, context, n_sequences, key)
    if frames.shape[-1] == 1:
        images = [Image.fromarray(frame[..., 0], mode="L") for frame in frames]
    else:
        images = [Image.fromarray(frame[..., :3]) for frame in frames]
    path = Path(path)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path

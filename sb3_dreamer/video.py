"""Imagination videos: real frames, the world model's reconstruction and open-loop prediction.

Each frame stacks three rows — the real observation, the model's output (reconstruction while
observing the first ``context`` steps, open-loop prediction from the logged actions after that)
and the absolute error — with ``n_sequences`` replayed sequences side by side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecNormalize

from sb3_dreamer.buffers import SequenceReplayBuffer
from sb3_dreamer.networks import as_dict
from sb3_dreamer.policies import DreamerPolicy


def imagination_frames(
    policy: DreamerPolicy,
    replay_buffer: SequenceReplayBuffer,
    context: int = 5,
    n_sequences: int = 4,
    key: str | None = None,
    env: VecNormalize | None = None,
) -> np.ndarray:
    """Video frames ``(T, 3*H, n_sequences*W, C)`` uint8 for one image input of the policy.

    :param key: image key for Dict observations (default: the first image key)
    :param env: the ``VecNormalize`` wrapper the model trains through, if any, so that the replayed
        vector inputs are normalised as in training
    """
    image_keys = policy.world_model.decoder.image_keys
    if not image_keys:
        raise ValueError("imagination videos need image observations (CnnPolicy or MultiInputPolicy)")
    key = key or image_keys[0]
    if key not in image_keys:
        raise ValueError(f"{key!r} is not an image input; image inputs: {image_keys}")
    batch = replay_buffer.sample(n_sequences, env=env)
    predictions = policy.world_model.open_loop(
        batch.observations, policy.encode_actions(batch.actions), batch.is_first, context
    )[key]  # (T, B, C, H, W)
    real = as_dict(batch.observations)[key].float() / 255.0
    rows = torch.stack([real, predictions, (real - predictions).abs()], dim=2)  # (T, B, 3, C, H, W)
    steps, batch_size, _, channels, height, width = rows.shape
    # (T, 3, H, B, W, C) -> (T, 3*H, B*W, C)
    grid = rows.permute(0, 2, 4, 1, 5, 3).reshape(steps, 3 * height, batch_size * width, channels)
    return (grid.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu().numpy()


def as_rgb(frames: np.ndarray) -> np.ndarray:
    """Frames ``(T, H, W, C)`` as RGB, which video encoders (tensorboard's too) need.

    RGB (``C == 3``) stays; any other channel count (grayscale, stacked frames) is shown as
    grayscale with the channels side by side: ``(T, H, C*W, 3)``.
    """
    steps, height, width, channels = frames.shape
    if channels == 3:
        return frames
    side_by_side = frames.transpose(0, 1, 3, 2).reshape(steps, height, channels * width, 1)
    return np.repeat(side_by_side, 3, axis=-1)


def write_imagination_video(
    model: "Dreamer",  # noqa: F821 - avoid a circular import
    path: str | Path,
    context: int = 5,
    n_sequences: int = 4,
    fps: int = 8,
    key: str | None = None,
) -> Path:
    """Write :func:`imagination_frames` of a trained ``Dreamer`` (from its replay buffer) to a file.

    The format follows the suffix: ``.gif`` (Pillow) or ``.mp4`` (H.264 through ``imageio`` with
    ``imageio-ffmpeg``, both in the ``extra`` install; frames are padded with black to even sizes,
    which H.264 needs).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"imagination videos are written as .gif or .mp4, got {path.name!r}")
    frames = imagination_frames(model.policy, model.replay_buffer, context, n_sequences, key, model._vec_normalize_env)
    rgb = as_rgb(frames)  # (T, H, W, 3)
    if suffix == ".gif":
        from PIL import Image

        images = [Image.fromarray(frame) for frame in rgb]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
        return path
    import imageio.v2 as imageio

    _, height, width, _ = rgb.shape
    rgb = np.pad(rgb, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)))
    imageio.mimwrite(path, list(rgb), fps=fps, codec="libx264", macro_block_size=1)
    return path

"""CnnPolicy and MultiInputPolicy on SB3's fake image envs; conv encoder/decoder shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.envs import FakeImageEnv, SimpleMultiObsEnv

from sb3_dreamer import Dreamer
from sb3_dreamer.networks import SINGLE_KEY, ConvDecoder, ConvEncoder, conv_stage_sizes
from tests.conftest import assert_same_policy_state, assert_same_predictions

PIXEL_KWARGS = dict(
    model_size="tiny",
    batch_size=2,
    sequence_length=4,
    learning_starts=8,
    buffer_size=200,
    train_freq=8,
    precision="fp32",
    seed=0,
)


@pytest.mark.parametrize(
    "size, stages",
    [((64, 64), [(32, 32), (16, 16), (8, 8), (4, 4)]), ((84, 84), [(42, 42), (21, 21), (10, 10), (5, 5)])],
)
def test_conv_stage_sizes(size, stages):
    assert conv_stage_sizes(*size)[1:] == stages


@pytest.mark.parametrize("shape", [(1, 40, 40), (3, 64, 64), (3, 84, 84), (1, 21, 30)])
def test_conv_encoder_decoder_round_trip_shapes(shape):
    encoder = ConvEncoder(shape, depth=4)
    images = torch.randint(0, 256, (2, 3, *shape), dtype=torch.uint8)
    embed = encoder(images)
    assert embed.shape == (2, 3, encoder.embed_size)
    decoder = ConvDecoder(feature_size=10, shape=shape, depth=4)
    features = torch.randn(2, 3, 10)
    assert decoder.predict(features).shape == (2, 3, *shape)
    loss = decoder(features, images)
    assert loss.shape == (2, 3) and loss.dtype == torch.float32
    # the loss is the squared error summed over pixels, with uint8 targets scaled to [0, 1]
    expected = ((decoder.predict(features) - images.float() / 255.0) ** 2).sum((-3, -2, -1))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-3)
    float_images = images.double() / 255.0  # float targets are taken as they are, in float32
    torch.testing.assert_close(decoder(features, float_images), expected, rtol=1e-5, atol=1e-3)


def test_too_small_images_raise():
    with pytest.raises(ValueError, match="larger than"):
        ConvEncoder((1, 6, 6), depth=4)


def test_images_are_what_sb3_calls_images():
    """3-D uint8 Boxes with bounds [0, 255] are images (channel-first); SB3 neither transposes nor
    treats as images those with other bounds, so they are vectors; a channel-last image is refused."""
    from sb3_dreamer.policies import split_observation_space

    images, vectors = split_observation_space(spaces.Box(0, 255, (3, 40, 40), np.uint8))
    assert images == {SINGLE_KEY: (3, 40, 40)} and vectors == {}
    images, vectors = split_observation_space(spaces.Box(0, 1, (64, 64, 8), np.uint8))
    assert images == {} and vectors == {SINGLE_KEY: 64 * 64 * 8}
    with pytest.raises(ValueError, match="channel-last"):
        split_observation_space(spaces.Dict({"camera": spaces.Box(0, 255, (40, 40, 3), np.uint8)}))


@pytest.mark.parametrize("size", [40, 84])
@pytest.mark.parametrize("channels", [1, 3])
def test_cnn_policy_on_fake_images(tmp_path, size, channels):
    env = FakeImageEnv(screen_height=size, screen_width=size, n_channels=channels, discrete=True)
    model = Dreamer("CnnPolicy", env, **PIXEL_KWARGS)
    # SB3 transposes HWC images to CHW; the buffer stores them once, as uint8
    assert model.observation_space.shape == (channels, size, size)
    assert model.replay_buffer.observations.dtype == np.uint8
    assert not hasattr(model.replay_buffer, "next_observations")
    model.learn(24)
    assert model._n_updates > 0
    obs = np.stack([env.observation_space.sample() for _ in range(3)])  # HWC, as the env returns
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (3,)
    model.save(tmp_path / "cnn")
    loaded = Dreamer.load(tmp_path / "cnn")
    assert_same_policy_state(model.policy, loaded.policy)
    assert_same_predictions(model, loaded, obs)


def test_predict_rejects_float_images_and_missing_keys():
    env = FakeImageEnv(screen_height=40, screen_width=40, n_channels=1, discrete=True)
    model = Dreamer("CnnPolicy", env, **PIXEL_KWARGS)
    with pytest.raises(TypeError, match="uint8"):
        model.predict(np.zeros((40, 40, 1), dtype=np.float32))
    multi = Dreamer("MultiInputPolicy", SimpleMultiObsEnv(), **PIXEL_KWARGS)
    with pytest.raises(ValueError, match="missing the keys"):
        multi.predict({"vec": np.zeros(5, np.float32)})
    with pytest.raises(TypeError, match="dict observation"):
        multi.predict(np.zeros(5, np.float32))


def test_multi_input_policy_on_simple_multi_obs_env(tmp_path):
    env = SimpleMultiObsEnv(random_start=True)
    model = Dreamer("MultiInputPolicy", env, **PIXEL_KWARGS)
    assert set(model.policy.world_model.encoder.image_keys) == {"img"}
    assert set(model.policy.world_model.encoder.vector_keys) == {"vec"}
    model.learn(24)
    obs = {key: np.stack([space.sample() for _ in range(2)]) for key, space in env.observation_space.spaces.items()}
    actions, state = model.predict(obs, deterministic=True)
    assert actions.shape == (2,) and state[0].shape[0] == 2
    model.save(tmp_path / "multi")
    loaded = Dreamer.load(tmp_path / "multi")
    assert_same_policy_state(model.policy, loaded.policy)
    assert_same_predictions(model, loaded, obs)


class ImageAndVectorEnv(FakeImageEnv):
    """A Dict of an RGB image and a velocity vector, with continuous actions."""

    def __init__(self) -> None:
        super().__init__(screen_height=40, screen_width=40, n_channels=3, discrete=False)
        self.observation_space = spaces.Dict(
            {"pixels": self.observation_space, "velocity": spaces.Box(-1.0, 1.0, (4,), np.float32)}
        )

    def reset(self, *, seed=None, options=None):
        _, info = super().reset(seed=seed)
        return self.observation_space.sample(), info

    def step(self, action):
        _, reward, terminated, truncated, info = super().step(action)
        return self.observation_space.sample(), reward, terminated, truncated, info


def test_dict_with_image_key_and_box_actions():
    model = Dreamer("MultiInputPolicy", ImageAndVectorEnv(), **PIXEL_KWARGS)
    model.learn(24)
    obs = model.observation_space.sample()
    action, _ = model.predict({key: value[None] for key, value in obs.items()})
    assert action.shape == (1, *model.action_space.shape) and model.action_space.contains(action[0])


@pytest.mark.parametrize("channels", [1, 3])
def test_imagination_video_in_tensorboard_gif_and_mp4(tmp_path, channels):
    """Grayscale too: tensorboard's video writer takes RGB only, so the logged video repeats a
    single channel into three."""
    import imageio.v2 as imageio
    from PIL import Image
    from stable_baselines3.common.logger import Video

    from sb3_dreamer.video import imagination_frames, write_imagination_video

    env = FakeImageEnv(screen_height=40, screen_width=40, n_channels=channels, discrete=True)
    model = Dreamer(
        "CnnPolicy",
        env,
        tensorboard_log=str(tmp_path / "tb"),
        video_log_interval=1,
        **{**PIXEL_KWARGS, "sequence_length": 8},
    )
    model.learn(24)
    frames = imagination_frames(model.policy, model.replay_buffer, context=3, n_sequences=2)
    assert frames.shape == (8, 3 * 40, 2 * 40, channels) and frames.dtype == np.uint8
    video = model.logger.name_to_value["imagination/video"]
    assert isinstance(video, Video) and video.frames.shape == (1, 8, 3, 3 * 40, 4 * 40)
    model.logger.dump(model.num_timesteps)  # writes the video (needs moviepy)
    events = list((tmp_path / "tb").rglob("events.out.tfevents*"))
    assert events and any(path.stat().st_size > 2000 for path in events)
    gif = write_imagination_video(model, tmp_path / "imagination.gif", context=3, n_sequences=2)
    with Image.open(gif) as image:
        assert image.n_frames == 8 and image.size == (80, 120)
    mp4 = write_imagination_video(model, tmp_path / "imagination.mp4", context=3, n_sequences=2)
    decoded = imageio.mimread(mp4)
    assert len(decoded) == 8 and decoded[0].shape == (120, 80, 3)
    with pytest.raises(ValueError, match=r"\.gif or \.mp4"):
        write_imagination_video(model, tmp_path / "imagination.avi")


def test_open_loop_prediction_restarts_at_an_episode_start():
    """A replayed window may run into a new episode: from its first step on the prediction must not
    depend on the episode before it (nor on the action logged at that step, which is a filler)."""
    env = FakeImageEnv(screen_height=40, screen_width=40, n_channels=1, discrete=True)
    world_model = Dreamer("CnnPolicy", env, **PIXEL_KWARGS).policy.world_model.eval()
    generator = torch.Generator().manual_seed(0)
    steps, batch, start = 8, 2, 6  # context 3; column 1 starts a new episode at step 6
    observations = torch.randint(0, 256, (steps, batch, 1, 40, 40), generator=generator, dtype=torch.uint8)
    classes = env.action_space.n
    actions = torch.nn.functional.one_hot(torch.randint(0, classes, (steps, batch), generator=generator), classes)
    actions = actions.float()
    is_first = torch.zeros(steps, batch)
    is_first[0] = 1.0
    is_first[start, 1] = 1.0
    other_observations, other_actions = observations.clone(), actions.clone()
    other_observations[:start, 1] = 255 - observations[:start, 1]
    other_actions[: start + 1, 1] = actions[: start + 1, 1].roll(1, dims=-1)
    first = world_model.open_loop(observations, actions, is_first, context=3)[SINGLE_KEY]
    second = world_model.open_loop(other_observations, other_actions, is_first, context=3)[SINGLE_KEY]
    assert not torch.allclose(first[start - 1, 1], second[start - 1, 1])
    torch.testing.assert_close(first[start:, 1], second[start:, 1], rtol=0, atol=0)
    torch.testing.assert_close(first[:, 0], second[:, 0], rtol=0, atol=0)


def test_imagination_videos_leave_training_unchanged(tmp_path):
    """Logging a video draws replay windows and latent samples from copies of the random streams,
    so the trained weights are the same with and without it."""
    weights = []
    for interval in (0, 1):
        env = FakeImageEnv(screen_height=40, screen_width=40, n_channels=1, discrete=True)
        env.observation_space.seed(0)  # FakeImageEnv draws its frames from its observation space
        model = Dreamer(
            "CnnPolicy",
            env,
            tensorboard_log=str(tmp_path / "tb"),
            video_log_interval=interval,
            **{**PIXEL_KWARGS, "sequence_length": 8},
        )
        model.learn(24)
        weights.append(torch.cat([p.detach().flatten() for p in model.policy.parameters()]))
    assert torch.equal(*weights)


def test_video_log_interval_with_one_step_sequences_raises_at_construction():
    env = FakeImageEnv(screen_height=40, screen_width=40, n_channels=1, discrete=True)
    with pytest.raises(ValueError, match="needs sequence_length >= 2"):
        Dreamer("CnnPolicy", env, video_log_interval=10, **{**PIXEL_KWARGS, "sequence_length": 1})


def test_video_frames_of_other_channel_counts_show_channels_side_by_side():
    from sb3_dreamer.video import as_rgb

    frames = np.arange(2 * 3 * 4 * 2, dtype=np.uint8).reshape(2, 3, 4, 2)  # (T, H, W, C=2)
    rgb = as_rgb(frames)
    assert rgb.shape == (2, 3, 8, 3)
    np.testing.assert_array_equal(rgb[:, :, :4, 1], frames[..., 0])
    np.testing.assert_array_equal(rgb[:, :, 4:, 2], frames[..., 1])
    colour = frames[..., :1].repeat(3, axis=-1)
    assert as_rgb(colour) is colour


def test_imagination_video_normalises_vectors_as_training_does(tmp_path):
    """With VecNormalize, the replayed vector inputs of the video are normalised like the
    training batches (the model never saw the raw ones)."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize, VecTransposeImage

    from sb3_dreamer.video import write_imagination_video

    # images transposed inside VecNormalize, as SB3's off-policy storage of terminal observations needs
    channel_first = VecTransposeImage(DummyVecEnv([ImageAndVectorEnv]))
    venv = VecNormalize(channel_first, norm_obs_keys=["velocity"], norm_reward=False)
    model = Dreamer("MultiInputPolicy", venv, video_log_interval=1, **{**PIXEL_KWARGS, "sequence_length": 8})
    sample_envs = []
    sample = model.replay_buffer.sample

    def recording_sample(batch_size, env=None):
        sample_envs.append(env)
        return sample(batch_size, env=env)

    model.replay_buffer.sample = recording_sample
    model.learn(24)
    write_imagination_video(model, tmp_path / "imagination.gif", context=3, n_sequences=2)
    assert len(sample_envs) > 2 and all(env is venv for env in sample_envs)


@pytest.mark.parametrize("policy, make_env", [("CnnPolicy", FakeImageEnv), ("MultiInputPolicy", ImageAndVectorEnv)])
def test_vec_normalize_over_channel_last_images_is_refused(policy, make_env):
    """SB3 adds VecTransposeImage outside the user's VecNormalize, whose original observations
    (which SB3 stores) then stay channel-last; transposing inside VecNormalize is accepted."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize, VecTransposeImage

    refused = VecNormalize(DummyVecEnv([make_env]), norm_obs=False)
    with pytest.raises(ValueError, match=r"VecNormalize\(VecTransposeImage\(venv\)"):
        Dreamer(policy, refused, **PIXEL_KWARGS)
    accepted = VecNormalize(VecTransposeImage(DummyVecEnv([make_env])), norm_obs=False)
    model = Dreamer(policy, accepted, **PIXEL_KWARGS)
    model.learn(16)
    with pytest.raises(ValueError, match="other shapes than the policy's"):
        model.set_env(VecNormalize(DummyVecEnv([make_env]), norm_obs=False))
    # the refused env is not kept: training goes on with the accepted one
    assert model.get_vec_normalize_env() is accepted and model.get_env() is accepted
    model.learn(8, reset_num_timesteps=False)


def test_imagination_video_needs_images(tmp_path):
    from sb3_dreamer.video import imagination_frames
    from tests.conftest import CueEnv

    model = Dreamer("MlpPolicy", CueEnv(), **PIXEL_KWARGS)
    model.learn(16)
    with pytest.raises(ValueError, match="image observations"):
        imagination_frames(model.policy, model.replay_buffer)


def test_imagination_video_checks_its_key_and_context():
    from sb3_dreamer.video import imagination_frames

    model = Dreamer("MultiInputPolicy", SimpleMultiObsEnv(random_start=True), **PIXEL_KWARGS)
    model.learn(16)
    with pytest.raises(ValueError, match="'vec' is not an image input; image inputs: \\['img'\\]"):
        imagination_frames(model.policy, model.replay_buffer, context=2, key="vec")
    for context in (0, PIXEL_KWARGS["sequence_length"]):
        with pytest.raises(ValueError, match=r"context must lie in \[1, 3\]"):
            imagination_frames(model.policy, model.replay_buffer, context=context)
    frames = imagination_frames(model.policy, model.replay_buffer, context=3, n_sequences=2)
    assert frames.shape[:3] == (PIXEL_KWARGS["sequence_length"], 3 * 64, 2 * 64) and frames.dtype == np.uint8

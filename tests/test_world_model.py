"""Shapes and invariants of the RSSM, the world-model losses and the actor-critic."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sb3_dreamer import behavior
from sb3_dreamer.behavior import ActionSpec, ActorCritic, ReplaySequences, imagine, replay_lambda_returns
from sb3_dreamer.networks import MultiDecoder, MultiEncoder
from sb3_dreamer.presets import DreamerConfig, make_config
from sb3_dreamer.world_model import RSSM, WorldModel

CONFIG = make_config("v3", "tiny")
SPEC = ActionSpec(discrete=True, heads=1, classes=3, valid_classes=(3,), dim=1)
CONTINUOUS_SPEC = ActionSpec(discrete=False, heads=1, classes=1, valid_classes=(1,), dim=2)
SMALL_RSSM = make_config("v3", deter_size=16, hidden_size=12, stoch_size=4, classes=5)


def make_world_model(
    obs_dim: int = 5, config: DreamerConfig = CONFIG, action_size: int = SPEC.encoding_size
) -> WorldModel:
    """A vector-observation world model of ``config`` with the policy's encoder and decoder."""
    encoder = MultiEncoder({}, {"observation": obs_dim}, config.units, config.layers, config.cnn_depth)
    decoder = MultiDecoder(
        config.feature_size, {}, {"observation": obs_dim}, config.units, config.layers, config.cnn_depth
    )
    return WorldModel(encoder, decoder, encoder.embed_size, action_size, config)


def record_calls(monkeypatch, owner, name: str) -> list[tuple[tuple, object]]:
    """Replace ``owner.<name>`` for the test by a wrapper that records ``(args, result)`` of every call."""
    calls = []
    original = getattr(owner, name)

    def recording(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append((args, result))
        return result

    monkeypatch.setattr(owner, name, recording)
    return calls


def test_rssm_observe_and_imagine_shapes():
    torch.manual_seed(0)
    rssm = RSSM(embed_size=7, action_size=3, config=SMALL_RSSM)
    T, B = 6, 3
    observed = rssm.observe(torch.randn(T, B, 7), torch.randn(T, B, 3), torch.zeros(T, B))
    assert observed.deter.shape == (T, B, 16)
    assert observed.stoch.shape == (T, B, 20)
    assert observed.post_stats.shape == (T, B, 4, 5)
    # stochastic samples are one-hot per latent
    torch.testing.assert_close(observed.stoch.view(T, B, 4, 5).sum(-1), torch.ones(T, B, 4))
    assert torch.all(observed.stoch.detach().round().view(T, B, 4, 5).sum(-1) == 1)
    nxt = rssm.img_step(observed.last, torch.randn(B, 3))
    assert nxt.deter.shape == (B, 16) and nxt.stoch.shape == (B, 20)
    assert rssm.prior_stats(observed.deter).shape == (T, B, 4, 5)


def test_is_first_resets_to_initial_state():
    torch.manual_seed(0)
    rssm = RSSM(7, 3, SMALL_RSSM)
    embed, action = torch.randn(4, 2, 7), torch.randn(4, 2, 3)
    is_first = torch.zeros(4, 2)
    is_first[2, 0] = 1.0
    full = rssm.observe(embed, action, is_first, sample=False)
    # the sequence from step 2 of stream 0 equals a fresh observe of that suffix
    starts = torch.tensor([[1.0], [0.0]])
    fresh = rssm.observe(embed[2:, :1], action[2:, :1], starts, sample=False)
    torch.testing.assert_close(full.deter[2:, :1], fresh.deter)
    torch.testing.assert_close(full.stoch[2:, :1], fresh.stoch)
    # stream 1 was not reset, so it differs from a fresh start
    fresh1 = rssm.observe(embed[2:, 1:], action[2:, 1:], starts, sample=False)
    assert not torch.allclose(full.deter[2:, 1:], fresh1.deter)


def test_free_bits_clamp_kl_and_stop_their_gradient():
    model = make_world_model()
    post = torch.log_softmax(torch.randn(2, 3, 4, 4) * 0.01, -1).requires_grad_(True)
    prior = torch.log_softmax(torch.randn(2, 3, 4, 4) * 0.01, -1).requires_grad_(True)
    dyn, rep = model.kl_losses(post, prior)
    assert dyn == CONFIG.free_bits and rep == CONFIG.free_bits
    (dyn + rep).backward()
    assert post.grad.abs().max() == 0 and prior.grad.abs().max() == 0


def test_v3_free_bits_clip_each_step_not_the_mean():
    """Steps under the 1-nat floor count as 1 and pass no gradient; the steps above keep theirs."""
    model = make_world_model()
    torch.manual_seed(0)
    sharp = torch.randn(2, 3, 4, 4) * 5
    sharp[0] = 0.0  # time step 0: uniform posterior and prior, KL 0
    post = torch.log_softmax(sharp, -1).requires_grad_(True)
    prior = torch.log_softmax(torch.randn(2, 3, 4, 4) * 5 * (torch.arange(2) > 0).view(2, 1, 1, 1), -1)
    prior.requires_grad_(True)
    per_step = model.rssm.latent.kl(post, prior)  # (T, B)
    assert (per_step[0] < CONFIG.free_bits).all() and (per_step[1] > CONFIG.free_bits).all()
    dyn, _ = model.kl_losses(post, prior)
    torch.testing.assert_close(dyn, per_step.clamp(min=CONFIG.free_bits).mean())
    assert dyn != per_step.mean().clamp(min=CONFIG.free_bits)
    dyn.backward()
    assert prior.grad[0].abs().max() == 0 and prior.grad[1].abs().min() > 0


def test_clipped_kl_share_counts_steps_or_the_batch_mean_under_the_floor():
    per_step = torch.tensor([[0.5, 2.0], [1.5, 0.2]])  # (T, B) nats; mean 1.05
    assert CONFIG.free_bits == 1.0 and not CONFIG.free_bits_on_mean
    assert make_world_model().clipped_kl_share(per_step) == 0.5  # V3: two of four steps
    on_mean = make_world_model(config=CONFIG.replace(free_bits_on_mean=True))
    assert on_mean.clipped_kl_share(per_step) == 0.0  # the mean clears the floor
    assert on_mean.clipped_kl_share(per_step - 0.1) == 1.0  # mean 0.95: the whole batch is clipped


@pytest.mark.parametrize("version", ["v1", "v3"])
def test_kl_losses_are_kl_of_posterior_from_prior(version):
    """Both terms are ``KL(posterior || prior)`` (not the reverse), summed over the latents and
    averaged over the steps: categoricals (V3) and Gaussians with unequal stds (V1)."""
    torch.manual_seed(0)
    config = make_config(version, "tiny", free_bits=0.0)
    model = make_world_model(config=config)
    Categorical, Normal = torch.distributions.Categorical, torch.distributions.Normal
    if version == "v3":
        post = torch.log_softmax(torch.randn(2, 3, 4, 4) * 3, -1)  # (T, B, S, K)
        prior = torch.log_softmax(torch.randn(2, 3, 4, 4) * 3, -1)
        post_dist, prior_dist = Categorical(logits=post), Categorical(logits=prior)
    else:
        post = torch.stack([torch.randn(2, 3, 5), torch.rand(2, 3, 5) + 0.2], dim=-2)  # (T, B, 2, D)
        prior = torch.stack([torch.randn(2, 3, 5), torch.rand(2, 3, 5) + 0.2], dim=-2)
        post_dist, prior_dist = Normal(*post.unbind(-2)), Normal(*prior.unbind(-2))
    expected = torch.distributions.kl_divergence(post_dist, prior_dist).sum(-1).mean()
    reverse = torch.distributions.kl_divergence(prior_dist, post_dist).sum(-1).mean()
    assert abs(expected - reverse) > 0.1
    dyn, rep = model.kl_losses(post, prior)
    torch.testing.assert_close(dyn, expected)
    torch.testing.assert_close(rep, expected)


def test_kl_terms_send_gradients_to_their_side():
    model = make_world_model()
    post = torch.log_softmax(torch.randn(2, 3, 4, 4) * 5, -1).requires_grad_(True)
    prior = torch.log_softmax(torch.randn(2, 3, 4, 4) * 5, -1).requires_grad_(True)
    dyn, rep = model.kl_losses(post, prior)
    assert dyn > CONFIG.free_bits
    dyn.backward()
    assert post.grad is None or post.grad.abs().max() == 0
    assert prior.grad.abs().max() > 0
    post.grad, prior.grad = None, None
    dyn, rep = model.kl_losses(post, prior)
    rep.backward()
    assert post.grad.abs().max() > 0
    assert prior.grad is None or prior.grad.abs().max() == 0


def test_continue_estimate_is_the_heads_mode_or_its_probability():
    features = torch.randn(6, CONFIG.feature_size)
    for logit in (1.0, -1.0):
        estimates = {}
        for estimate in ("mode", "probability"):
            model = make_world_model(config=CONFIG.replace(continue_estimate=estimate))
            head = model.continue_head.out
            with torch.no_grad():
                head.weight.zero_()
                head.bias.fill_(logit)
            estimates[estimate] = model.continuation(features)
        torch.testing.assert_close(estimates["mode"], torch.full((6,), float(logit > 0)))
        torch.testing.assert_close(estimates["probability"], torch.sigmoid(torch.full((6,), logit)))


def test_reward_and_critic_heads_start_at_zero():
    model = make_world_model()
    actor_critic = ActorCritic(model.rssm.feature_size, SPEC, CONFIG)
    features = torch.randn(10, model.rssm.feature_size)
    assert model.reward(features).abs().max() < 1e-5
    assert actor_critic.value(features).abs().max() < 1e-5


def test_world_model_loss_and_imagination_shapes():
    torch.manual_seed(0)
    model = make_world_model()
    T, B = 5, 2
    actions = torch.nn.functional.one_hot(torch.randint(0, 3, (T, B)), 3).float()
    out = model.loss(torch.randn(T, B, 5), actions, torch.randn(T, B), torch.zeros(T, B), torch.zeros(T, B))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.rssm.parameters() if p.requires_grad)
    assert out.posterior.deter.shape == (T * B, CONFIG.deter_size)
    actor_critic = ActorCritic(model.rssm.feature_size, SPEC, CONFIG)
    trajectory = imagine(model, actor_critic.actor, out.posterior, CONFIG.horizon, grad=False)
    assert trajectory.features.shape == (CONFIG.horizon + 1, T * B, model.rssm.feature_size)
    assert trajectory.actions.shape == (CONFIG.horizon, T * B, 3)
    # the start state is index 0 of the imagined trajectory
    torch.testing.assert_close(trajectory.features[0], out.posterior.features())
    actor = actor_critic.actor_loss(model, out.posterior, out.start_continue)
    assert actor.returns.shape == (CONFIG.horizon, T * B)
    assert torch.isfinite(actor_critic.critic_loss(actor))


def test_imagination_steps_each_state_with_the_action_the_actor_chose_in_it(monkeypatch):
    """Index t of ``actions``/``actor_params`` belongs to state t, and state t + 1 is the prior step
    from state t with that action (no off-by-one between the three sequences)."""
    torch.manual_seed(0)
    model = make_world_model()
    actor = ActorCritic(model.rssm.feature_size, SPEC, CONFIG).actor
    T, B = 3, 2
    actions = torch.nn.functional.one_hot(torch.randint(0, 3, (T, B)), 3).float()
    posterior = model.loss(torch.randn(T, B, 5), actions, torch.randn(T, B), torch.zeros(T, B), torch.zeros(T, B))
    steps = record_calls(monkeypatch, model.rssm, "img_step")
    trajectory = imagine(model, actor, posterior.posterior, horizon=4, grad=False)
    assert len(steps) == 4
    for t, ((state, action), next_state) in enumerate(steps):
        state_features = state.features()
        assert torch.equal(trajectory.features[t], state_features)
        assert torch.equal(trajectory.actions[t], action)
        assert torch.equal(trajectory.features[t + 1], next_state.features())
        torch.testing.assert_close(trajectory.actor_params[t], actor(state_features), rtol=0, atol=0)
    assert not torch.equal(trajectory.actor_params[0], trajectory.actor_params[1])


@pytest.mark.parametrize(
    "version, spec, overrides",
    [
        ("v3", SPEC, {"return_norm_decay": 0.0}),  # Reinforce; the return scale is this batch's (above 1)
        ("v2", SPEC, {"actor_grad_discrete": "both", "actor_grad_mix": 0.3}),  # V2's Atari mix
        ("v2", CONTINUOUS_SPEC, {}),  # backprop of the slow critic's returns, truncated Normal
        ("v1", CONTINUOUS_SPEC, {}),  # backprop, tanh-Normal
    ],
)
def test_actor_loss_is_the_weighted_objective_plus_the_entropy_bonus(version, spec, overrides, monkeypatch):
    """``-mean((objective + ent_coef * entropy) * weights)`` over the imagined states 0..H-1, with the
    objective of the version's estimator: ``log π(a) * advantage`` (Reinforce), the normalised
    advantage or return (backprop), or their mix; advantages are returns minus the (slow) critic."""
    torch.manual_seed(0)
    config = make_config(version, "tiny", ent_coef=0.1, **overrides)
    model = make_world_model(config=config, action_size=spec.encoding_size)
    actor_critic = ActorCritic(model.rssm.feature_size, spec, config)
    with torch.no_grad():  # non-zero rewards and values (the heads start at zero)
        for head in (model.reward_head, actor_critic.critic, actor_critic.slow_critic):
            for parameter in head.parameters():
                parameter.normal_(0.0, 0.3)
        list(model.continue_head.parameters())[-1].fill_(3.0)  # output bias: continuing is likely
    imaginations = record_calls(monkeypatch, behavior, "imagine")
    T, B = 4, 2
    if spec.discrete:
        actions = torch.nn.functional.one_hot(torch.randint(0, 3, (T, B)), 3).float()
    else:
        actions = torch.rand(T, B, spec.dim) * 2 - 1
    world = model.loss(torch.randn(T, B, 5), actions, torch.randn(T, B), torch.zeros(T, B), torch.zeros(T, B))
    output = actor_critic.actor_loss(model, world.posterior, world.start_continue)
    ((_, trajectory),) = imaginations

    values = actor_critic.value(output.features, slow=config.slow_critic_returns)  # (H, N)
    scale = actor_critic.return_normalizer.scale() if config.return_normalization else 1.0
    assert not config.return_normalization or scale > 2 * config.return_norm_limit
    advantages = (output.returns - values) / scale
    assert advantages.abs().min() > 0
    reinforce = actor_critic.actor.log_prob(trajectory.actor_params, trajectory.actions) * advantages
    backprop = advantages if config.backprop_baseline else output.returns / scale
    objective = {
        "reinforce": reinforce,
        "backprop": backprop,
        "both": config.actor_grad_mix * backprop + (1 - config.actor_grad_mix) * reinforce,
    }[actor_critic.actor_grad]
    entropy = actor_critic.actor.entropy(trajectory.actor_params)  # (H, N)
    expected = -((objective + config.ent_coef * entropy) * output.weights).mean()
    torch.testing.assert_close(output.loss, expected)
    # the weights are the cumulative predicted discount from the start state's continue flag
    torch.testing.assert_close(output.weights[0], world.start_continue)
    assert (output.weights[1:] <= output.weights[:-1] + 1e-6).all() and (output.weights > 0).all()


def test_loss_scales_weight_the_head_losses():
    torch.manual_seed(0)
    T, B = 6, 3
    actions = torch.nn.functional.one_hot(torch.randint(0, 3, (T, B)), 3).float()
    is_terminal = torch.zeros(T, B)
    is_terminal[-1, 0] = 1.0
    batch = (torch.randn(T, B, 5), actions, torch.randn(T, B), torch.zeros(T, B), is_terminal)
    plain = make_world_model()
    scaled = make_world_model(
        config=dataclasses.replace(CONFIG, decoder_scale=2.0, reward_scale=3.0, continue_scale=0.0)
    )
    scaled.load_state_dict(plain.state_dict())
    torch.manual_seed(1)
    plain_out = plain.loss(*batch)
    torch.manual_seed(1)
    scaled_out = scaled.loss(*batch)
    metrics = plain_out.metrics
    expected = plain_out.loss + metrics["reconstruction_loss"] + 2.0 * metrics["reward_loss"] - metrics["continue_loss"]
    torch.testing.assert_close(scaled_out.loss, expected)


def test_replay_critic_loss_regresses_real_sequences_only_when_enabled():
    torch.manual_seed(0)
    model = make_world_model()
    T, B = 6, 3
    actions = torch.nn.functional.one_hot(torch.randint(0, 3, (T, B)), 3).float()
    rewards, is_terminal = torch.rand(T, B), torch.zeros(T, B)
    is_first = torch.zeros(T, B)
    is_first[3, 1] = 1.0  # stream 1 starts a new episode at step 3
    out = model.loss(torch.randn(T, B, 5), actions, rewards, is_first, is_terminal)
    posterior = out.posterior.features().unflatten(0, (T, B))
    plain = ActorCritic(model.rssm.feature_size, SPEC, CONFIG)
    # a critic whose predictions depend on the state, so that the loss depends on the targets
    torch.nn.init.normal_(plain.critic.out.weight, std=0.5)
    plain.slow_critic.load_state_dict(plain.critic.state_dict())
    actor = plain.actor_loss(model, out.posterior, out.start_continue)
    base = plain.critic_loss(actor)
    replay = ReplaySequences(posterior, rewards, is_first, is_terminal)
    # off (the 2023 papers): the replay batch is ignored
    torch.testing.assert_close(plain.critic_loss(actor, replay), base)
    with_replay = ActorCritic(model.rssm.feature_size, SPEC, CONFIG.replace(replay_critic_scale=0.3))
    with_replay.load_state_dict(plain.state_dict())
    # every replayed step ends its episode: no real return to regress, nothing is added
    all_last = ReplaySequences(posterior, rewards, torch.ones(T, B), is_terminal)
    torch.testing.assert_close(with_replay.critic_loss(actor, all_last), base)
    # on: plus 0.3 x the regression of each replayed state's real λ-return, bootstrapped from the
    # imagined return of that same state (start state t * B + b of the imagination)
    boot = torch.stack([torch.stack([actor.returns[0, t * B + b] for b in range(B)]) for t in range(T)])
    targets, weights = replay_lambda_returns(rewards, is_first, is_terminal, boot, CONFIG.gamma, CONFIG.return_lambda)
    raw = with_replay.critic(posterior[:-1])
    slow = with_replay.value(posterior[:-1], slow=True)
    nll = with_replay.critic.loss(raw, targets) + CONFIG.slow_reg_scale * with_replay.critic.loss(raw, slow)
    expected = base + 0.3 * (nll * weights).mean()
    loss = with_replay.critic_loss(actor, replay)
    torch.testing.assert_close(loss, expected)
    assert weights[2, 1] == 0.0  # the step before the new episode
    # a one-step sequence has no next step: nothing to regress
    one_step = ReplaySequences(posterior[:1], rewards[:1], is_first[:1], is_terminal[:1])
    torch.testing.assert_close(with_replay.critic_loss(actor, one_step), base)
    loss.backward()
    assert all(p.grad is not None for p in with_replay.critic.parameters())


def test_replay_critic_loss_by_hand(monkeypatch):
    """Literal numbers: with a regression "loss" that is its target, the critic loss is the weighted
    mean imagined return plus 0.3 x the mean replayed λ-return, bootstrapped from the imagined
    return of the same replayed state (flattened time-major, ``t * B + b``), on states 0..T-2."""
    config = CONFIG.replace(replay_critic_scale=0.3, slow_reg_scale=0.0, gamma=0.9, return_lambda=0.5)
    actor_critic = ActorCritic(config.feature_size, SPEC, config)
    monkeypatch.setattr(actor_critic.critic, "loss", lambda raw, target: target)
    critic_calls = record_calls(monkeypatch, actor_critic.critic, "forward")
    T, B = 3, 2
    imagined_returns = torch.tensor([[10.0, 20.0, 30.0, 40.0, 50.0, 60.0]])  # (H=1, N=T*B), mean 35
    imagined = behavior.ActorOutput(
        loss=torch.zeros(()),
        features=torch.randn(1, T * B, config.feature_size),
        returns=imagined_returns,
        weights=torch.ones(1, T * B),
        critic_raw=None,
        metrics={},
    )
    posterior = torch.randn(T, B, config.feature_size)
    rewards = torch.tensor([[0.0, 0.0], [2.0, 1.0], [3.0, 1.0]])  # (T, B)
    replay = ReplaySequences(posterior, rewards, torch.zeros(T, B), torch.zeros(T, B))
    # stream 0 bootstraps from 10, 30, 50 and stream 1 from 20, 40, 60:
    # R_1 = r_2 + 0.9 b_2 (48 and 55); R_0 = r_1 + 0.9 (0.5 b_1 + 0.5 R_1) (37.1 and 43.75)
    expected = 35.0 + 0.3 * (48.0 + 55.0 + 37.1 + 43.75) / 4
    torch.testing.assert_close(actor_critic.critic_loss(imagined, replay), torch.tensor(expected))
    assert torch.equal(critic_calls[-1][0][0], posterior[:-1])


def test_dreamer_trains_with_the_replay_critic_loss(monkeypatch):
    from sb3_dreamer import Dreamer

    model = Dreamer(
        "MlpPolicy", "CartPole-v1", model_size="tiny", batch_size=4, sequence_length=8, learning_starts=64,
        hyperparams={"replay_critic_scale": 0.3}, seed=0,
    )  # fmt: skip
    calls = record_calls(monkeypatch, model.policy.actor_critic, "critic_loss")
    model.learn(96)
    received = [args[1] for args, _ in calls]  # the replay batch
    assert model._n_updates > 0 and model._n_updates_skipped == 0
    assert len(received) == model._n_updates
    features = received[0].features  # (T, B, F)
    assert features.shape == (8, 4, model.policy.config.feature_size)
    assert received[0].rewards.shape == (8, 4)

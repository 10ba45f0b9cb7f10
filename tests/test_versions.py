"""What distinguishes DreamerV1, V2 and V3, checked on the pieces that implement it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sb3_dreamer import Dreamer
from sb3_dreamer.behavior import ActionSpec, ActorCritic, tanh_normal_mode
from sb3_dreamer.networks import ScalarHead
from sb3_dreamer.presets import MODEL_SIZES, PRESETS, make_config
from sb3_dreamer.world_model import CategoricalLatent, GaussianLatent
from tests.conftest import CueEnv
from tests.test_world_model import make_world_model

SPEC = ActionSpec(discrete=False, heads=1, classes=1, valid_classes=(1,), dim=2)


def test_presets_follow_the_papers():
    v1, v2, v3 = PRESETS["v1"], PRESETS["v2"], PRESETS["v3"]
    assert (v1.latent, v1.stoch_size, v1.deter_size, v1.gru, v1.activation) == ("gaussian", 30, 200, "standard", "elu")
    assert (v1.free_bits, v1.free_bits_on_mean, v1.kl_dyn_scale, v1.kl_rep_scale) == (3.0, True, 1.0, 1.0)
    assert (v1.actor_grad_continuous, v1.actor_dist, v1.explore_noise, v1.heads) == (
        "backprop",
        "tanh_normal",
        0.3,
        "gaussian",
    )
    assert (v1.model_lr, v1.actor_lr, v1.critic_lr, v1.model_grad_clip) == (6e-4, 8e-5, 8e-5, 100.0)
    assert (v2.latent, v2.stoch_size, v2.classes, v2.gru, v2.unimix) == ("categorical", 32, 32, "layer_norm", 0.0)
    assert v2.kl_dyn_scale / (v2.kl_dyn_scale + v2.kl_rep_scale) == pytest.approx(0.8)
    assert (v2.free_bits, v2.free_bits_on_mean) == (1.0, True)  # the authors' dmc config: kl.free 1
    # the authors' code discounts imagination by the continue head's mean; V1's pcont loss scale is 10
    assert (v1.continue_estimate, v2.continue_estimate, v3.continue_estimate) == ("probability", "probability", "mode")
    assert (v1.continue_scale, v2.continue_scale) == (10.0, 1.0)
    assert (v2.slow_critic_interval, v2.slow_critic_decay, v2.slow_critic_returns) == (100, 0.0, True)
    assert (v2.actor_grad_discrete, v2.actor_grad_continuous, v2.ent_coef) == ("reinforce", "backprop", 1e-4)
    # the authors' dmc actor: a Normal truncated to [-1, 1], std 2 sigmoid(s / 2) + 0.1
    assert (v2.actor_dist, v2.actor_min_std, v3.actor_dist) == ("trunc_normal", 0.1, "normal")
    assert (v2.model_eps, v2.weight_decay) == (1e-5, 1e-6)
    assert (v3.unimix, v3.free_bits, v3.heads, v3.return_normalization) == (0.01, 1.0, "two_hot", True)
    # sizes can still be chosen per version, and every field overridden
    assert make_config("v1", "tiny").stoch_size == 4 and make_config("v1", "tiny").latent == "gaussian"
    assert make_config("v2", ent_coef=1e-3).ent_coef == 1e-3


def test_size_presets_follow_the_dreamerv3_size_table():
    # GRU units, dense units (the MLPs and, as one `units` value in the authors' code, the RSSM's
    # hidden layers), MLP layers and CNN multiplier of XS, S, M and L
    table = {"XS": (256, 256, 1, 24), "S": (512, 512, 2, 32), "M": (1024, 640, 3, 48), "L": (2048, 768, 4, 64)}
    for name, (deter, units, layers, cnn_depth) in table.items():
        size = MODEL_SIZES[name]
        assert (size.deter_size, size.units, size.hidden_size, size.layers, size.cnn_depth) == (
            deter, units, units, layers, cnn_depth,
        ), name  # fmt: skip
        assert (size.stoch_size, size.classes) == (32, 32)


def test_v1_latent_is_gaussian_and_free_nats_clamp_the_mean_kl():
    config = make_config("v1", "tiny")
    model = make_world_model(config=config)
    assert isinstance(model.rssm.latent, GaussianLatent)
    observed = model.rssm.observe(torch.randn(5, 3, model.encoder.embed_size), torch.randn(5, 3, 3), torch.zeros(5, 3))
    assert observed.stoch.shape == (5, 3, config.stoch_size)
    assert observed.post_stats.shape == (5, 3, 2, config.stoch_size)
    assert torch.all(observed.post_stats[..., 1, :] >= config.latent_min_std)
    # a KL below 3 nats on average is clamped to 3 with no gradient, even if some steps exceed it
    mean = torch.zeros(4, 2, config.stoch_size)
    std = torch.ones(4, 2, config.stoch_size)
    post = torch.stack([mean, std], dim=-2).requires_grad_(True)
    prior_mean = mean.clone()
    prior_mean[0, 0] = 0.9  # one step has KL 0.405 * stoch_size = 1.62... nats, the mean stays below 3
    prior_mean[0, 0, 0] = 3.0  # ... plus 4.5 nats on one dimension: that step alone exceeds 3
    prior = torch.stack([prior_mean, std], dim=-2).requires_grad_(True)
    per_step = model.rssm.latent.kl(post, prior)
    assert per_step.max() > config.free_bits > per_step.mean()
    assert model.clipped_kl_share(per_step) == 1.0  # reported as train/kl_clipped
    dyn, rep = model.kl_losses(post, prior)
    assert dyn == config.free_bits and rep == config.free_bits
    (dyn + rep).backward()
    assert post.grad.abs().max() == 0 and prior.grad.abs().max() == 0


def test_v2_kl_balancing_sends_80_percent_of_the_gradient_to_the_prior():
    config = make_config("v2", "tiny")
    model = make_world_model(config=config)
    assert isinstance(model.rssm.latent, CategoricalLatent)
    torch.manual_seed(0)
    post = torch.log_softmax(torch.randn(3, 2, 4, 4) * 3, -1).requires_grad_(True)
    prior = torch.log_softmax(torch.randn(3, 2, 4, 4) * 3, -1).requires_grad_(True)
    dyn, rep = model.kl_losses(post, prior)
    assert dyn > config.free_bits  # above V2's free nat, so neither term is clipped
    (config.kl_dyn_scale * dyn + config.kl_rep_scale * rep).backward()
    balanced_post, balanced_prior = post.grad.clone(), prior.grad.clone()
    post.grad, prior.grad = None, None
    plain = model.rssm.latent.kl(post, prior).mean()  # the unbalanced KL at scale 1
    plain.backward()
    torch.testing.assert_close(balanced_prior, 0.8 * prior.grad)
    torch.testing.assert_close(balanced_post, 0.2 * post.grad)
    torch.testing.assert_close(dyn, plain.detach())


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_world_model_loss_weights_the_kl_terms_by_their_scales(version, monkeypatch):
    """The loss itself applies the balance: d loss / d dyn = kl_dyn_scale, d loss / d rep = kl_rep_scale."""
    config = make_config(version, "tiny")
    model = make_world_model(config=config)
    dyn, rep = torch.tensor(2.0, requires_grad=True), torch.tensor(3.0, requires_grad=True)
    monkeypatch.setattr(model, "kl_losses", lambda post, prior: (dyn, rep))
    T, B = 4, 2
    actions = torch.nn.functional.one_hot(torch.randint(0, 3, (T, B)), 3).float()
    model.loss(torch.randn(T, B, 5), actions, torch.randn(T, B), torch.zeros(T, B), torch.zeros(T, B)).loss.backward()
    assert config.kl_dyn_scale != config.kl_rep_scale
    assert dyn.grad.item() == pytest.approx(config.kl_dyn_scale)
    assert rep.grad.item() == pytest.approx(config.kl_rep_scale)


def test_v2_target_critic_changes_only_every_100_updates():
    config = make_config("v2", "tiny")
    actor_critic = ActorCritic(config.feature_size, SPEC, config)
    features = torch.randn(7, config.feature_size)
    before = actor_critic.value(features, slow=True)
    for update in range(1, 201):
        with torch.no_grad():
            for param in actor_critic.critic.parameters():
                param.add_(0.01)
        actor_critic.update_slow_critic()
        slow = actor_critic.value(features, slow=True)
        if update % 100 == 0:
            torch.testing.assert_close(slow, actor_critic.value(features))
            before = slow
        else:
            torch.testing.assert_close(slow, before)


def test_v3_slow_critic_is_an_ema_and_its_heads_are_two_hot():
    config = make_config("v3", "tiny")
    actor_critic = ActorCritic(config.feature_size, SPEC, config)
    assert isinstance(actor_critic.critic, ScalarHead) and actor_critic.critic.two_hot
    assert actor_critic.critic.out.out_features == config.reward_bins
    slow_before = [p.clone() for p in actor_critic.slow_critic.parameters()]
    with torch.no_grad():
        for param in actor_critic.critic.parameters():
            param.add_(1.0)
    actor_critic.update_slow_critic()
    for slow, old, fast in zip(actor_critic.slow_critic.parameters(), slow_before, actor_critic.critic.parameters()):
        torch.testing.assert_close(slow, old + (1 - config.slow_critic_decay) * (fast - old))


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_gaussian_heads_are_scalar_with_half_squared_error(version):
    head = make_world_model(config=make_config(version, "tiny")).reward_head
    assert not head.two_hot and head.out.out_features == 1
    raw = torch.tensor([[1.0], [3.0]])
    torch.testing.assert_close(head.loss(raw, torch.tensor([0.0, 1.0])), torch.tensor([0.5, 2.0]))
    torch.testing.assert_close(head.mean(raw), torch.tensor([1.0, 3.0]))


def test_v1_actor_is_tanh_normal_with_exploration_noise():
    config = make_config("v1", "tiny")
    actor = ActorCritic(config.feature_size, SPEC, config).actor
    params = actor(torch.randn(1000, config.feature_size))
    samples = actor.sample(params)
    assert samples.abs().max() <= 1.0
    # the log-density of a = tanh(u) is the Gaussian's at u minus log |d tanh(u) / du|
    mean, std = actor.mean_std(params)
    pre_tanh = (mean + std * torch.randn_like(mean)).clamp(-3.0, 3.0)  # tanh stays resolvable in float32
    expected = torch.distributions.Normal(mean, std).log_prob(pre_tanh).sum(-1) - torch.log1p(
        -(torch.tanh(pre_tanh) ** 2)
    ).sum(-1)
    torch.testing.assert_close(actor.log_prob(params, torch.tanh(pre_tanh)), expected, rtol=1e-4, atol=1e-3)
    torch.manual_seed(0)
    explored = actor.explore(torch.zeros(1000, 2))
    assert explored.std().item() == pytest.approx(config.explore_noise, rel=0.1)
    # its entropy is that of the squashed actions: -E[log p(a)] over its own samples, per state
    pre_tanh = (mean[:1] + std[:1] * torch.randn(200_000, mean.shape[-1])).double()
    sampled = torch.distributions.Normal(mean[:1].double(), std[:1].double()).log_prob(pre_tanh).sum(-1)
    sampled = sampled - torch.distributions.transforms.TanhTransform().log_abs_det_jacobian(pre_tanh, None).sum(-1)
    assert actor.entropy(params[:1])[0].item() == pytest.approx(-sampled.mean().item(), abs=0.05)


def test_v1_deterministic_action_is_the_mode_of_the_squashed_density():
    torch.manual_seed(0)
    # random cases, and the flat ones where the density turns bimodal (2 std^2 = 1, mean near 0)
    flat_mean = torch.tensor([0.0, 0.0, 0.01, -0.01, 0.1], dtype=torch.float64)
    flat_std = torch.tensor([0.7071, 0.69, 0.71, 0.71, 0.75], dtype=torch.float64)
    mean = torch.cat([3.0 * torch.randn(500, dtype=torch.float64), flat_mean])
    std = torch.cat([5.0 * torch.rand(500, dtype=torch.float64) + 1e-3, flat_std])
    mode = tanh_normal_mode(mean, std)
    # the log-density of a = tanh(u) on a fine grid of actions: Normal(atanh(a)) / (1 - a^2)
    grid = torch.linspace(-1.0 + 1e-7, 1.0 - 1e-7, 400_001, dtype=torch.float64)
    log_density = -0.5 * ((torch.atanh(grid) - mean[:, None]) / std[:, None]) ** 2 - torch.log1p(-grid.square())
    assert torch.allclose(mode, grid[log_density.argmax(-1)], atol=1e-4)
    # a wide std puts the mode near the bound of the mean's side, not at tanh(mean)
    wide = tanh_normal_mode(torch.tensor([0.3, -0.3]), torch.tensor([5.0, 5.0]))
    assert wide[0] > 0.99 and wide[1] < -0.99
    # the actor's deterministic action is that mode, and repeatable
    config = make_config("v1", "tiny")
    actor = ActorCritic(config.feature_size, SPEC, config).actor
    params = actor(torch.randn(10, config.feature_size))
    torch.testing.assert_close(actor.mode(params), tanh_normal_mode(*actor.mean_std(params)))


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_save_load_round_trip_keeps_version_and_predictions(tmp_path, tiny_kwargs, version):
    model = Dreamer("MlpPolicy", CueEnv(action_type="continuous"), version=version, **tiny_kwargs)
    model.learn(64)
    obs = np.stack([model.observation_space.sample() for _ in range(3)])
    before = model.predict(obs, deterministic=True)
    model.save(tmp_path / "model")
    loaded = Dreamer.load(tmp_path / "model")
    assert loaded.version == version and loaded.dreamer_config == model.dreamer_config
    after = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(after[0], before[0])
    for part_after, part_before in zip(after[1], before[1]):
        np.testing.assert_array_equal(part_after, part_before)
    for name, tensor in model.policy.state_dict().items():
        torch.testing.assert_close(loaded.policy.state_dict()[name], tensor, rtol=0, atol=0)


def test_unknown_version_is_rejected(tiny_kwargs):
    with pytest.raises(ValueError, match="version"):
        Dreamer("MlpPolicy", CueEnv(), version="v4", **tiny_kwargs)


def test_an_override_cannot_change_the_version(tiny_kwargs):
    with pytest.raises(ValueError, match="version argument"):
        Dreamer("MlpPolicy", CueEnv(), version="v3", hyperparams={"version": "v1"}, **tiny_kwargs)


def test_v2_weight_decay_shrinks_every_parameter_by_the_same_factor_per_update(tiny_kwargs):
    """As in the DreamerV2 authors' optimiser, each update multiplies every trained parameter by
    ``1 - 1e-6`` whatever the learning rate (AdamW's ``lr * 1e-6`` would round away in float32).
    The learning rates of 1e-12 keep Adam's own step a thousand times below the decay."""
    rates = dict(model_lr=1e-12, actor_lr=1e-12, critic_lr=1e-12)
    model = Dreamer("MlpPolicy", CueEnv(action_type="continuous"), version="v2", hyperparams=rates, **tiny_kwargs)
    assert model.policy.config.weight_decay == 1e-6
    model.learn(64)
    policy = model.policy
    optimizers = (policy.world_model_optimizer, policy.actor_optimizer, policy.critic_optimizer)
    params = [param for opt in optimizers for group in opt.param_groups for param in group["params"]]
    before = [param.detach().double().clone() for param in params]
    _, applied = policy.train_step(model.replay_buffer.sample(4))
    assert all(applied)
    for old, param in zip(before, params):
        large = old.abs() > 1e-3
        shrink = (old - param.detach().double())[large] / old[large]
        torch.testing.assert_close(shrink, torch.full_like(shrink, 1e-6), rtol=0, atol=2e-7)


@pytest.mark.parametrize(("version", "flows"), [("v1", True), ("v2", True), ("v3", False)])
def test_a_backprop_actor_learns_through_the_predicted_continuation(version, flows, tiny_kwargs, monkeypatch):
    """DreamerV1's and V2's code compute the λ-returns' discounts from the continue head inside the
    actor's gradient tape; V3 (2023) thresholds it (``"mode"``), which passes no gradient."""
    model = Dreamer("MlpPolicy", CueEnv(action_type="continuous"), version=version, **tiny_kwargs)
    model.learn(40)
    policy, actor_critic = model.policy, model.policy.actor_critic
    assert actor_critic.uses_backprop
    batch = model.replay_buffer.sample(4)
    actions = policy.encode_actions(batch.actions)
    wm = policy.world_model.loss(batch.observations, actions, batch.rewards, batch.is_first, batch.is_terminal)

    def actor_gradient() -> torch.Tensor:
        torch.manual_seed(0)  # the same imagined actions
        with policy.frozen(policy.world_model, actor_critic.critic):
            loss = actor_critic.actor_loss(policy.world_model, wm.posterior, wm.start_continue).loss
        grads = torch.autograd.grad(loss, list(actor_critic.actor.parameters()))
        return torch.cat([grad.flatten() for grad in grads])

    through = actor_gradient()
    continuation = policy.world_model.continuation
    monkeypatch.setattr(policy.world_model, "continuation", lambda features: continuation(features).detach())
    cut = actor_gradient()
    assert not torch.equal(through, cut) if flows else torch.equal(through, cut)

"""Unit tests of the plain-tensor distribution maths and the λ-return."""

import math

import pytest
import torch

from sb3_dreamer.behavior import ReturnNormalizer, lambda_returns, replay_lambda_returns
from sb3_dreamer.distributions import (
    categorical_entropy,
    categorical_kl,
    gaussian_entropy,
    gaussian_kl,
    gaussian_log_prob,
    sample_one_hot,
    straight_through,
    symexp,
    symlog,
    symlog_bins,
    tanh_normal_entropy,
    truncated_normal_entropy,
    truncated_normal_log_prob,
    truncated_normal_sample,
    two_hot,
    two_hot_symlog_loss,
    two_hot_symlog_mean,
    unimix_log_probs,
)


def test_symlog_symexp_are_inverse_and_odd():
    x = torch.tensor([-1e4, -10.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 10.0, 1e4], dtype=torch.float64)
    torch.testing.assert_close(symexp(symlog(x)), x)
    torch.testing.assert_close(symlog(-x), -symlog(x))
    assert symlog(torch.tensor(math.e - 1.0)).item() == pytest.approx(1.0)


def test_two_hot_weights_sum_to_one_and_recover_value():
    bins = symlog_bins(255)
    x = torch.tensor([-20.0, -3.3, 0.0, 0.05, 7.77, 20.0])
    weights = two_hot(x, bins)
    torch.testing.assert_close(weights.sum(-1), torch.ones(6))
    torch.testing.assert_close(weights @ bins, x)
    assert (weights > 0).sum(-1).max() <= 2


def test_two_hot_clips_out_of_range():
    bins = torch.tensor([-1.0, 0.0, 1.0])
    torch.testing.assert_close(two_hot(torch.tensor([5.0, -5.0]), bins), torch.tensor([[0, 0, 1.0], [1.0, 0, 0]]))


def test_two_hot_loss_matches_dense_cross_entropy_and_decodes():
    bins = symlog_bins(255)
    target = torch.tensor([-250.0, -1.0, 0.0, 0.3, 42.0])
    logits = torch.randn(5, 255, generator=torch.Generator().manual_seed(0))
    dense = -(two_hot(symlog(target), bins) * torch.log_softmax(logits, -1)).sum(-1)
    torch.testing.assert_close(two_hot_symlog_loss(logits, target, bins), dense)
    # a head whose logits put all mass on the two-hot target decodes to the target
    peaked = torch.log(two_hot(symlog(target), bins).clamp(min=1e-30))
    torch.testing.assert_close(two_hot_symlog_mean(peaked, bins), target, rtol=1e-4, atol=1e-4)


def test_zero_logits_decode_to_zero():
    bins = symlog_bins(255)
    assert two_hot_symlog_mean(torch.zeros(3, 255), bins).abs().max() < 1e-5


def test_unimix_puts_floor_under_probabilities():
    logits = torch.tensor([[100.0, 0.0, 0.0, 0.0]])
    probs = unimix_log_probs(logits, 0.01).exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(1))
    assert probs.min().item() == pytest.approx(0.01 / 4, rel=1e-4)
    assert probs.max().item() == pytest.approx(0.99 + 0.01 / 4, rel=1e-4)
    torch.testing.assert_close(unimix_log_probs(logits, 0.0), torch.log_softmax(logits, -1))


def test_sample_one_hot_frequencies_follow_probabilities():
    torch.manual_seed(0)
    probs = torch.tensor([0.1, 0.2, 0.7]).expand(20000, 3)
    samples = sample_one_hot(probs)
    assert torch.all(samples.sum(-1) == 1)
    torch.testing.assert_close(samples.mean(0), torch.tensor([0.1, 0.2, 0.7]), atol=0.015, rtol=0)


def test_straight_through_has_sample_value_and_probability_gradient():
    logits = torch.tensor([[0.5, -0.2, 1.0]], requires_grad=True)
    probs = torch.softmax(logits, -1)
    sample = torch.tensor([[0.0, 1.0, 0.0]])
    out = straight_through(sample, probs)
    torch.testing.assert_close(out, sample)
    weights = torch.tensor([[1.0, 2.0, 3.0]])
    (out * weights).sum().backward()
    # the gradient is that of the expected value under the probabilities
    expected_logits = logits.detach().clone().requires_grad_(True)
    (torch.softmax(expected_logits, -1) * weights).sum().backward()
    torch.testing.assert_close(logits.grad, expected_logits.grad)
    assert logits.grad.abs().sum() > 0


def test_categorical_kl_zero_for_equal_and_positive_otherwise():
    p = torch.log_softmax(torch.randn(4, 8), -1)
    q = torch.log_softmax(torch.randn(4, 8), -1)
    assert categorical_kl(p, p).abs().max() < 1e-6
    assert (categorical_kl(p, q) > 0).all()


def test_kl_and_entropies_match_torch_distributions_and_their_direction():
    torch.manual_seed(0)
    Categorical, Normal = torch.distributions.Categorical, torch.distributions.Normal
    kl_divergence = torch.distributions.kl_divergence
    log_p = torch.log_softmax(3 * torch.randn(4, 6), -1)
    log_q = torch.log_softmax(3 * torch.randn(4, 6), -1)
    expected = kl_divergence(Categorical(logits=log_p), Categorical(logits=log_q))
    torch.testing.assert_close(categorical_kl(log_p, log_q), expected)
    assert (categorical_kl(log_q, log_p) - expected).abs().min() > 1e-3  # KL(p || q), not KL(q || p)
    torch.testing.assert_close(categorical_entropy(log_p), Categorical(logits=log_p).entropy())
    # diagonal Gaussians with unequal means and stds, summed over the last axis
    mean_p, mean_q = torch.randn(4, 3), torch.randn(4, 3)
    std_p, std_q = torch.rand(4, 3) + 0.2, torch.rand(4, 3) + 0.2
    expected = kl_divergence(Normal(mean_p, std_p), Normal(mean_q, std_q)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mean_p, std_p, mean_q, std_q), expected)
    assert (gaussian_kl(mean_q, std_q, mean_p, std_p) - expected).abs().min() > 1e-3
    torch.testing.assert_close(gaussian_entropy(std_p), Normal(mean_p, std_p).entropy().sum(-1))
    x = torch.randn(4, 3)
    torch.testing.assert_close(gaussian_log_prob(x, mean_p, std_p), Normal(mean_p, std_p).log_prob(x).sum(-1))


def test_lambda_returns_match_hand_computation():
    rewards = torch.tensor([[1.0], [2.0], [3.0]])  # (H=3, N=1)
    discounts = torch.tensor([[0.9], [0.9], [0.0]])
    values = torch.tensor([[10.0], [20.0], [30.0], [40.0]])
    lam = 0.5
    r3 = 40.0
    r2 = 3.0 + 0.0 * ((1 - lam) * 40.0 + lam * r3)
    r1 = 2.0 + 0.9 * ((1 - lam) * 30.0 + lam * r2)
    r0 = 1.0 + 0.9 * ((1 - lam) * 20.0 + lam * r1)
    expected = torch.tensor([[r0], [r1], [r2]])
    torch.testing.assert_close(lambda_returns(rewards, discounts, values, lam), expected)


def test_lambda_one_is_monte_carlo_and_zero_is_td():
    rewards = torch.tensor([[1.0], [1.0]])
    discounts = torch.full((2, 1), 0.5)
    values = torch.tensor([[0.0], [4.0], [8.0]])
    torch.testing.assert_close(
        lambda_returns(rewards, discounts, values, 1.0)[0], torch.tensor([1 + 0.5 * (1 + 0.5 * 8)])
    )
    torch.testing.assert_close(lambda_returns(rewards, discounts, values, 0.0)[0], torch.tensor([1 + 0.5 * 4.0]))


def test_return_normalizer_tracks_percentiles_with_floor():
    norm = ReturnNormalizer(decay=0.0, low_percentile=5.0, high_percentile=95.0, limit=1.0)
    returns = torch.linspace(0.0, 100.0, 1001)
    scale = norm.update(returns)
    assert scale.item() == pytest.approx(90.0, rel=1e-3)
    assert norm.update(torch.zeros(10)).item() == 1.0
    ema = ReturnNormalizer(decay=0.99, low_percentile=5.0, high_percentile=95.0, limit=1.0)
    ema.update(returns)
    assert ema.high.item() == pytest.approx(0.01 * 95.0, rel=1e-3)
    assert ema.low.item() == pytest.approx(0.01 * 5.0, rel=1e-3)
    assert "high" in ema.state_dict() and "low" in ema.state_dict()
    # a batch with a non-finite return leaves both statistics as they were
    low, high = ema.low.clone(), ema.high.clone()
    for bad in (torch.tensor([float("nan"), 1.0]), torch.tensor([1.0, float("inf")])):
        ema.update(bad)
        assert torch.equal(ema.low, low) and torch.equal(ema.high, high)


def test_replay_lambda_returns_match_hand_computation():
    # one stream: an episode that terminates at step 2 (reward 2), then a new episode at step 3
    rewards = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    is_first = torch.tensor([[1.0], [0.0], [0.0], [1.0]])
    is_terminal = torch.tensor([[0.0], [0.0], [1.0], [0.0]])
    boot = torch.tensor([[10.0], [20.0], [30.0], [40.0]])
    returns, weights = replay_lambda_returns(rewards, is_first, is_terminal, boot, gamma=0.9, lam=0.5)
    # R_1 = r_2 (step 2 is terminal); R_0 = r_1 + γ((1 - λ) b_1 + λ R_1); step 2 ends its episode:
    # its return would run into the next episode, so it gets weight 0
    torch.testing.assert_close(returns[:2], torch.tensor([[1.0 + 0.9 * (0.5 * 20.0 + 0.5 * 2.0)], [2.0]]))
    torch.testing.assert_close(weights, torch.tensor([[1.0], [1.0], [0.0]]))


def test_replay_lambda_returns_bootstrap_at_the_sequence_end_and_time_outs():
    rewards = torch.ones(3, 2)
    boot = torch.full((3, 2), 5.0)
    no_flags = torch.zeros(3, 2)
    returns, weights = replay_lambda_returns(rewards, no_flags, no_flags, boot, gamma=0.5, lam=1.0)
    # λ = 1 without flags: Monte-Carlo returns bootstrapped from the last step's value
    torch.testing.assert_close(returns, torch.tensor([[1 + 0.5 * (1 + 0.5 * 5.0)] * 2, [1 + 0.5 * 5.0] * 2]))
    assert bool((weights == 1.0).all())
    # a time-out (the next step starts a new episode, no terminal) bootstraps from the last step's value
    is_first = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    returns, weights = replay_lambda_returns(rewards, is_first, no_flags, boot, gamma=0.5, lam=1.0)
    torch.testing.assert_close(returns[0, 0], torch.tensor(1 + 0.5 * 5.0))
    assert weights[1, 0] == 0.0 and weights[0, 0] == 1.0


def test_tanh_normal_entropy_is_that_of_the_squashed_density():
    """-E[log p(tanh(u))] of the squashed density as torch builds it (the Normal's log-density less
    ``TanhTransform``'s log-Jacobian), on a fine grid of the pre-squash variable, for means inside
    and deep in the saturated tails and stds from V1's floor to its initial 5; and the entropy's
    gradient pulls a saturated mean back toward zero."""
    from torch.distributions import Normal
    from torch.distributions.transforms import TanhTransform

    mean = torch.tensor([0.0, 0.7, -2.5, 4.0, 4.0, 0.3], dtype=torch.float64)
    std = torch.tensor([5.0, 1.0, 0.5, 0.02, 2.0, 1e-3], dtype=torch.float64)
    expected = []
    for m, s in zip(mean, std):
        u = torch.linspace(float(m - 10 * s), float(m + 10 * s), 400_001, dtype=torch.float64)
        log_density = Normal(m, s).log_prob(u)
        squashed_log_density = log_density - TanhTransform().log_abs_det_jacobian(u, torch.tanh(u))
        expected.append(-torch.trapezoid(log_density.exp() * squashed_log_density, u))
    got = tanh_normal_entropy(mean[:, None], std[:, None])
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-4, rtol=0)
    # summed over the last axis, and below the unsquashed Gaussian's entropy
    pair = tanh_normal_entropy(mean.view(3, 2), std.view(3, 2))
    torch.testing.assert_close(pair, got.view(3, 2).sum(-1))
    assert (got < gaussian_entropy(std[:, None])).all()
    saturated = torch.tensor([[3.0, -3.0]], dtype=torch.float64, requires_grad=True)
    tanh_normal_entropy(saturated, torch.full((1, 2), 0.1, dtype=torch.float64)).sum().backward()
    assert saturated.grad[0, 0] < -1.0 and saturated.grad[0, 1] > 1.0


def test_truncated_normal_density_entropy_and_samples_agree():
    mean = torch.tensor([[0.3, -0.9, 0.99]], dtype=torch.float64)
    std = torch.tensor([[1.1, 0.1, 2.0]], dtype=torch.float64)
    grid = torch.linspace(-1.0, 1.0, 200_001, dtype=torch.float64)
    step = grid[1] - grid[0]
    # log-density per dimension on a fine grid of [-1, 1]: it integrates to one
    log_density = torch.stack(
        [truncated_normal_log_prob(grid[:, None], mean[:, d], std[:, d]) for d in range(3)], -1
    )  # (G, 3)
    density = log_density.exp()
    torch.testing.assert_close(torch.trapezoid(density, dx=step, dim=0), torch.ones(3, dtype=torch.float64))
    # closed-form entropy against -∫ p log p, and the sample mean against ∫ x p
    entropy = -torch.trapezoid(density * log_density, dx=step, dim=0)
    closed_form = torch.stack([truncated_normal_entropy(mean[:, d : d + 1], std[:, d : d + 1])[0] for d in range(3)])
    torch.testing.assert_close(closed_form, entropy, atol=1e-5, rtol=0)
    torch.manual_seed(0)
    samples = truncated_normal_sample(mean.expand(100_000, 3), std.expand(100_000, 3))
    assert samples.abs().max() < 1.0
    expected_mean = torch.trapezoid(grid[:, None] * density, dx=step, dim=0)
    torch.testing.assert_close(samples.mean(0), expected_mean, atol=0.01, rtol=0)


def test_truncated_normal_sample_is_reparameterised():
    mean = torch.tensor([0.2], dtype=torch.float64, requires_grad=True)
    std = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    torch.manual_seed(0)
    sample = truncated_normal_sample(mean.expand(50_000), std.expand(50_000))
    sample.mean().backward()

    # d E[x] / d mean by finite differences of the closed-form mean of the truncated normal
    def pdf(z: float) -> float:
        return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)

    def cdf(z: float) -> float:
        return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))

    def truncated_mean(m: float) -> float:
        alpha, beta = (-1.0 - m) / 0.5, (1.0 - m) / 0.5
        return m + 0.5 * (pdf(alpha) - pdf(beta)) / (cdf(beta) - cdf(alpha))

    finite_difference = (truncated_mean(0.2 + 1e-4) - truncated_mean(0.2 - 1e-4)) / 2e-4
    assert mean.grad.item() == pytest.approx(finite_difference, abs=0.02)

    # d E[x] / d std likewise (the closed-form mean with std as the variable)
    def truncated_mean_of_std(s: float) -> float:
        alpha, beta = (-1.0 - 0.2) / s, (1.0 - 0.2) / s
        return 0.2 + s * (pdf(alpha) - pdf(beta)) / (cdf(beta) - cdf(alpha))

    finite_difference = (truncated_mean_of_std(0.5 + 1e-4) - truncated_mean_of_std(0.5 - 1e-4)) / 2e-4
    assert std.grad.item() == pytest.approx(finite_difference, abs=0.02)
    # the closed-form entropy's gradients against finite differences
    inputs = (
        torch.tensor([[0.3, -0.7]], dtype=torch.float64, requires_grad=True),
        torch.tensor([[0.4, 1.5]], dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(truncated_normal_entropy, inputs)


def test_truncated_normal_sample_stays_finite_when_a_bound_cdf_rounds_to_one(monkeypatch):
    # at a mean of -1 the upper bound is 20 stds away, its CDF exactly 1.0 in float64; the largest
    # uniform draw lands on it, and the inverse CDF there is infinite
    monkeypatch.setattr(torch, "rand_like", lambda x: torch.full_like(x, 1.0 - 2.0**-53))
    mean = torch.tensor([-1.0], requires_grad=True)
    std = torch.tensor([0.1], requires_grad=True)
    sample = truncated_normal_sample(mean, std)
    sample.sum().backward()
    assert torch.isfinite(sample).all() and -1.0 < sample.item() < 1.0
    assert torch.isfinite(mean.grad).all() and torch.isfinite(std.grad).all()

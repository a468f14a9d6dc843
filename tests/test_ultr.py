"""Unbiased learning-to-rank losses: hand-computed values, and the behaviour that defines them on a
log with a known position bias (a naive ranker learns the logging policy's feature, IPS and DLA
do not; DLA's learned examination curve is the true one)."""

import math

import pytest
import torch

from uptrain.losses import get_loss
from uptrain.losses.ultr import DLA, IPSListwise, IPSPointwise, NaiveListwise, NaivePointwise

NAN = float("nan")


def click_target(clicked, ranks, props):
    return torch.stack([torch.tensor(clicked, dtype=torch.float32), torch.tensor(ranks, dtype=torch.float32),
                        torch.tensor(props, dtype=torch.float32)], dim=-1)


def test_ips_listwise_matches_hand_computation():
    s = torch.tensor([[1.0, 0.0, -1.0, 5.0]])
    # rank 0 and 2 clicked; column 3 was not shown (rank -1): left out of the softmax
    t = click_target([[1, 0, 1, 0]], [[0, 1, 2, -1]], [[0.8, 0.5, 0.2, NAN]])
    lse = math.log(math.exp(1) + math.exp(0) + math.exp(-1))
    want = 1.0 * (lse - 1.0) + (0.8 / 0.2) * (lse + 1.0)
    assert IPSListwise()(s, t).item() == pytest.approx(want, rel=1e-5)
    assert NaiveListwise()(s, t).item() == pytest.approx((lse - 1.0) + (lse + 1.0), rel=1e-5)


def test_ips_pointwise_matches_hand_computation():
    s = torch.tensor([[0.5, -0.3]])
    t = click_target([[1, 0]], [[0, 3]], [[0.25, 0.1]])
    sp = torch.nn.functional.softplus
    y = 1 / 0.25
    want = (y * sp(torch.tensor(-0.5)) + (1 - y) * sp(torch.tensor(0.5)) + sp(torch.tensor(-0.3))) / 2
    assert IPSPointwise()(s, t).item() == pytest.approx(want.item(), rel=1e-5)
    naive = (sp(torch.tensor(-0.5)) + sp(torch.tensor(-0.3))) / 2
    assert NaivePointwise()(s, t).item() == pytest.approx(naive.item(), rel=1e-5)


def test_ips_refuses_missing_propensities_and_clips_small_ones():
    s = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="propensities"):
        IPSListwise()(s, click_target([[1, 0]], [[0, 1]], [[NAN, NAN]]))
    # a propensity of 1e-6 is raised to min_propensity: the weight is 1 / 0.01, not 1e6
    lo = IPSListwise(min_propensity=0.01, max_weight=1e9)(s, click_target([[0, 1]], [[0, 1]], [[1.0, 1e-6]]))
    assert lo.item() == pytest.approx(100 * math.log(2), rel=1e-5)


def test_losses_are_registered_and_read_the_click_target():
    for name in ("naive_pointwise", "ips_pointwise", "naive_listwise", "ips_listwise", "dla"):
        assert get_loss(name).target == "click"
    with pytest.raises(ValueError, match="click target"):
        NaiveListwise()(torch.zeros(2, 3), torch.zeros(2, 3))


def _biased_log(n_sessions=3000, n_docs=10, seed=0, noise=0.0):
    """Docs with features (a, b) ~ N(0, 1); P(relevant) = min(1, exp(a - 2.5)) (log-linear, so a linear
    scorer can represent it exactly); the logging ranker sorts by b (irrelevant); examination
    theta_k = 1 / k at rank k = 1..10. Clicks = examined and relevant."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_sessions, n_docs, 2, generator=g)
    order = torch.argsort(-(x[..., 1] + noise * torch.randn(n_sessions, n_docs, generator=g)), dim=1)
    x = torch.gather(x, 1, order.unsqueeze(-1).expand(-1, -1, 2))  # rank order of the logging ranker
    theta = 1.0 / torch.arange(1, n_docs + 1, dtype=torch.float32)
    rel = torch.exp(x[..., 0] - 2.5).clamp(max=1.0)
    clicks = (torch.rand(n_sessions, n_docs, generator=g) < theta * rel).float()
    ranks = torch.arange(n_docs).expand(n_sessions, -1).float()
    target = torch.stack([clicks, ranks, theta.expand(n_sessions, -1)], dim=-1)
    return x, target, theta


def _train(loss, x, target, steps=300):
    w = torch.zeros(2, requires_grad=True)
    params = [w] + list(loss.parameters())
    opt = torch.optim.Adam([{"params": [w], "lr": 0.05}] + ([{"params": list(loss.parameters()), "lr": 0.05}]
                                                             if list(loss.parameters()) else []))
    for _ in range(steps):
        opt.zero_grad()
        out = loss(x @ w, target)
        out.backward()
        opt.step()
    assert all(torch.isfinite(p).all() for p in params)
    return w.detach()


def test_ips_ignores_the_logging_policy_feature_that_naive_learns():
    # catches: propensity weights not applied (IPS = naive), or applied inverted (theta / theta_1)
    x, target, _ = _biased_log()
    naive = _train(NaiveListwise(), x, target)
    fixed = _train(IPSListwise(), x, target)
    # the naive ranker credits the logging ranker's feature b for the clicks that position bias gave it
    assert naive[1] / naive[0] > 0.3
    assert abs(fixed[1] / fixed[0]) < 0.1
    assert fixed[0] > 0


def test_dla_learns_the_ranker_and_the_examination_curve():
    # catches: the propensity model trained on unweighted clicks (it then learns theta_k x the mean relevance
    # the logging policy put at rank k), its softmax taken over the wrong axis, or the ranker left unweighted.
    # The logging policy explores (noise 1): with b sorting the SERP exactly, b and rank are confounded and
    # DLA has no unique solution (the confounding that Unconfounded Propensity Estimation addresses).
    x, target, theta = _biased_log(n_sessions=12000, noise=1.0)
    loss = DLA(ranks=10)
    w = _train(loss, x, target, steps=300)
    assert abs(w[1] / w[0]) < 0.12 and w[0] > 0
    learned = torch.tensor(loss.examination())
    true = theta / theta[0]
    assert learned[0] == pytest.approx(1.0)
    assert (learned - true).abs().max() < 0.12, (learned, true)
    assert (learned - true).abs().mean() < 0.04, (learned, true)

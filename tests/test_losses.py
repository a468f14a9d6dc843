"""Losses against hand arithmetic, an independent per-row reference, and torch's own ops."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from uptrain.losses import (
    LOSSES, ConjInfoNCE, DisjInfoNCE, InfoNCE, KLDivergence, PointwiseBCE, PointwiseCE, RankingLoss, get_loss, register,
)

E = math.exp
CONF = Path(__file__).resolve().parents[1] / "conf"
CONTRASTIVE = [InfoNCE, ConjInfoNCE, DisjInfoNCE]
NINF = float("-inf")


def t(x):
    return torch.tensor(x, dtype=torch.float64)


# ---- hand-computed values -------------------------------------------------------

def test_disj_by_hand():
    # scores [1,2,3], positives {2,3}: -log((e^2+e^3)/(e^1+e^2+e^3))
    want = -math.log((E(2) + E(3)) / (E(1) + E(2) + E(3)))
    got = DisjInfoNCE()(t([[1.0, 2.0, 3.0]]), torch.tensor([[0, 1, 1]])).item()
    assert got == pytest.approx(want, abs=1e-12)


def test_conj_by_hand_is_a_sum_over_positives():
    # Z = e^1+e^2+e^3; -[log(e^2/Z) + log(e^3/Z)] (sum, not mean)
    z = E(1) + E(2) + E(3)
    want = -(math.log(E(2) / z) + math.log(E(3) / z))
    got = ConjInfoNCE()(t([[1.0, 2.0, 3.0]]), torch.tensor([[0, 1, 1]])).item()
    assert got == pytest.approx(want, abs=1e-12)


def test_infonce_by_hand_multi_positive():
    # each positive against the negative only: mean(-log(e^2/(e^2+e^1)), -log(e^3/(e^3+e^1)))
    want = 0.5 * (-math.log(E(2) / (E(2) + E(1))) - math.log(E(3) / (E(3) + E(1))))
    got = InfoNCE()(t([[1.0, 2.0, 3.0]]), torch.tensor([[0, 1, 1]])).item()
    assert got == pytest.approx(want, abs=1e-12)


def test_infonce_by_hand_one_positive_two_rows():
    # row 0: -log(e^0/(e^0+e^1+e^2)); row 1: -log(e^3/(e^3+e^0+e^0)); mean of the two
    r0 = -math.log(E(0) / (E(0) + E(1) + E(2)))
    r1 = -math.log(E(3) / (E(3) + E(0) + E(0)))
    got = InfoNCE()(t([[0.0, 1.0, 2.0], [0.0, 3.0, 0.0]]), torch.tensor([[1, 0, 0], [0, 1, 0]])).item()
    assert got == pytest.approx((r0 + r1) / 2, abs=1e-12)


def test_kl_by_hand():
    # U = softmax([0, ln 3]) = [1/4, 3/4]; R = softmax([0, 0]) = [1/2, 1/2]
    # KL = 1/4 log((1/4)/(1/2)) + 3/4 log((3/4)/(1/2))
    want = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    got = KLDivergence()(t([[0.0, 0.0]]), t([[0.0, math.log(3.0)]])).item()
    assert got == pytest.approx(want, abs=1e-12)


def test_kl_by_hand_with_target_temperature_and_masked_label():
    # tau_u = 2, u = [0, ln 9, -inf] -> u/2 = [0, ln 3], third column dropped: U = [1/4, 3/4]
    # R over the first two columns only: softmax([ln 3, 0]) = [3/4, 1/4]
    want = 0.25 * math.log(0.25 / 0.75) + 0.75 * math.log(0.75 / 0.25)
    got = KLDivergence(target_temperature=2.0)(t([[math.log(3.0), 0.0, 5.0]]), t([[0.0, math.log(9.0), NINF]]))
    assert got.item() == pytest.approx(want, abs=1e-12)


# ---- independent reference ------------------------------------------------------

def reference(name: str, scores: np.ndarray, labels: np.ndarray) -> float:
    """Straightforward per-row loop with Python floats; -inf columns are dropped."""
    losses = []
    for s, y in zip(scores.tolist(), labels.tolist()):
        cols = [j for j in range(len(s)) if math.isfinite(s[j])]
        pos = [j for j in cols if y[j]]
        neg = [j for j in cols if not y[j]]
        if not pos:
            continue
        z = sum(E(s[j]) for j in cols)
        if name == "disj":
            losses.append(-math.log(sum(E(s[j]) for j in pos) / z))
        elif name == "conj":
            losses.append(-sum(math.log(E(s[j]) / z) for j in pos))
        else:
            zn = sum(E(s[j]) for j in neg)
            losses.append(sum(-math.log(E(s[p]) / (E(s[p]) + zn)) for p in pos) / len(pos))
    return sum(losses) / len(losses)


def random_batch(seed: int, masked: bool):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(7, 9)) * 3
    labels = rng.random((7, 9)) < 0.35
    labels[0] = False  # a row without positive is left out of the mean
    labels[1, :] = False
    labels[1, 4] = True  # a row with exactly one positive
    labels[2, :] = True  # a row with no negative
    labels[3, [0, 2, 5]] = True  # a row with several positives
    if masked:
        scores[rng.random((7, 9)) < 0.15] = -np.inf
        scores[:, 8] = -np.inf  # a padding column
        labels[4, 8] = True  # a positive in a masked column is no positive
    return scores, labels


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("name, cls", [("disj", DisjInfoNCE), ("conj", ConjInfoNCE), ("info", InfoNCE)])
def test_matches_reference_on_random_inputs(seed, masked, name, cls):
    scores, labels = random_batch(seed, masked)
    s = torch.tensor(scores, requires_grad=True)
    loss = cls()(s, torch.tensor(labels))
    assert loss.item() == pytest.approx(reference(name, scores, labels), rel=1e-9)
    loss.backward()
    assert torch.isfinite(s.grad).all()


def test_losses_differ_with_several_positives():
    # the three objectives are distinct once a row has more than one positive
    scores, labels = random_batch(0, False)
    values = {cls.__name__: cls()(torch.tensor(scores), torch.tensor(labels)).item() for cls in CONTRASTIVE}
    assert len({round(v, 9) for v in values.values()}) == 3, values


# ---- identities ---------------------------------------------------------------

def test_one_positive_all_three_equal_cross_entropy():
    torch.manual_seed(0)
    scores = torch.randn(5, 7, dtype=torch.float64) * 2
    target = torch.tensor([0, 3, 6, 2, 1])
    labels = F.one_hot(target, 7).bool()
    ce = F.cross_entropy(scores, target).item()
    for cls in CONTRASTIVE:
        assert cls()(scores, labels).item() == pytest.approx(ce, rel=1e-12), cls.__name__


def test_one_positive_gradients_equal_cross_entropy():
    torch.manual_seed(3)
    base = torch.randn(4, 6, dtype=torch.float64)
    target = torch.tensor([5, 0, 2, 2])
    ref = base.clone().requires_grad_(True)
    F.cross_entropy(ref, target).backward()
    for cls in CONTRASTIVE:
        s = base.clone().requires_grad_(True)
        cls()(s, F.one_hot(target, 6)).backward()
        torch.testing.assert_close(s.grad, ref.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", CONTRASTIVE + [KLDivergence])
def test_invariant_to_a_row_shift_and_stable_for_large_scores(cls):
    # softmax-based: adding c to a row changes nothing; c = 1e4 would overflow exp() in float32
    torch.manual_seed(2)
    scores = torch.randn(3, 5)
    labels = torch.tensor([[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [0, 0, 1, 1, 1]], dtype=torch.float32)
    if cls is KLDivergence:
        labels = torch.randn(3, 5)
    base = cls()(scores, labels)
    shifted = cls()(scores + torch.tensor([[1e4], [-1e4], [0.0]]), labels)
    assert torch.isfinite(shifted)
    assert shifted.item() == pytest.approx(base.item(), abs=1e-2)


@pytest.mark.parametrize("cls", CONTRASTIVE)
def test_gradcheck(cls):
    torch.manual_seed(4)
    scores = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [0, 1, 0, 0, 0]])
    assert torch.autograd.gradcheck(lambda s: cls()(s, labels), (scores,))


def test_kl_gradcheck_and_gradient_is_r_minus_u():
    # d KL(U||R) / d s_j = R_j - U_j for one row
    torch.manual_seed(5)
    s = torch.randn(1, 6, dtype=torch.float64, requires_grad=True)
    u = torch.randn(1, 6, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: KLDivergence(target_temperature=0.5)(x, u), (s,))
    KLDivergence(target_temperature=0.5)(s, u).backward()
    want = torch.softmax(s.detach(), 1) - torch.softmax(u / 0.5, 1)
    torch.testing.assert_close(s.grad, want, rtol=1e-10, atol=1e-12)


# ---- masking and empty rows -------------------------------------------------------

@pytest.mark.parametrize("cls", CONTRASTIVE)
def test_masked_column_equals_dropping_it_and_gradients_stay_finite(cls):
    torch.manual_seed(1)
    base = torch.randn(3, 5, dtype=torch.float64)
    labels = torch.zeros(3, 5, dtype=torch.bool)
    labels[:, 0] = True
    labels[1, 2] = True
    labels[0, 4] = True  # labelled positive, but masked: must not count
    masked = base.clone()
    masked[:, 4] = NINF
    masked[2, 3] = NINF
    masked.requires_grad_(True)
    loss = cls()(masked, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(masked.grad).all()
    assert (masked.grad[:, 4] == 0).all() and masked.grad[2, 3] == 0

    def kept(i):
        return [j for j in range(5) if j != 4 and not (i == 2 and j == 3)]

    dropped = sum(cls()(base[i : i + 1, kept(i)], labels[i : i + 1, kept(i)]).item() for i in range(3)) / 3
    assert loss.item() == pytest.approx(dropped, rel=1e-12)


@pytest.mark.parametrize("cls", CONTRASTIVE)
def test_rows_without_positive_are_left_out_of_the_mean(cls):
    torch.manual_seed(6)
    scores = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 0, 0]])
    loss = cls()(scores, labels)
    kept = cls()(scores[[0, 2]], labels[[0, 2]])
    assert loss.item() == pytest.approx(kept.item(), rel=1e-12)
    # the mean over all four rows would be half as large: make sure it is not that
    assert loss.item() != pytest.approx(kept.item() / 2, rel=1e-3)
    loss.backward()
    assert (scores.grad[[1, 3]] == 0).all() and (scores.grad[[0, 2]] != 0).any()


@pytest.mark.parametrize("cls", CONTRASTIVE + [KLDivergence])
def test_no_positive_anywhere_gives_zero_with_grad(cls):
    scores = torch.randn(2, 4, requires_grad=True)
    labels = torch.zeros(2, 4) if cls is not KLDivergence else torch.full((2, 4), NINF)
    loss = cls()(scores, labels)
    assert loss.item() == 0.0 and loss.requires_grad and loss.grad_fn is not None
    loss.backward()
    assert (scores.grad == 0).all()


@pytest.mark.parametrize("cls", CONTRASTIVE)
def test_positives_only_in_masked_columns_count_as_no_positive(cls):
    scores = torch.tensor([[NINF, 1.0, 2.0]], requires_grad=True)
    loss = cls()(scores, torch.tensor([[1, 0, 0]]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(scores.grad).all() and (scores.grad == 0).all()


def test_infonce_row_with_only_positives_is_zero_and_finite():
    # no negative: each positive's denominator is itself, -log(e^s/e^s) = 0
    scores = torch.tensor([[1.0, 2.0, NINF]], requires_grad=True)
    loss = InfoNCE()(scores, torch.tensor([[1, 1, 0]]))
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    loss.backward()
    assert torch.isfinite(scores.grad).all()


def test_kl_matches_numpy_with_masks_and_ignores_empty_rows():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(4, 5))
    u = rng.normal(size=(4, 5)) * 2
    u[1, 2] = -np.inf  # no utility for this passage
    u[2, 0] = np.nan  # missing utility
    s[2, 4] = -np.inf  # masked column
    u[3, :] = -np.inf  # a row without any utility: ignored
    tau = 2.0
    want = []
    for i in range(3):
        keep = np.isfinite(u[i]) & np.isfinite(s[i])
        pu = np.exp(u[i][keep] / tau) / np.exp(u[i][keep] / tau).sum()
        pr = np.exp(s[i][keep]) / np.exp(s[i][keep]).sum()
        want.append(np.sum(pu * np.log(pu / pr)))
    st = torch.tensor(s, requires_grad=True)
    got = KLDivergence(target_temperature=tau)(st, torch.tensor(u))
    assert got.item() == pytest.approx(float(np.mean(want)), rel=1e-9)
    got.backward()
    assert torch.isfinite(st.grad).all()
    assert (st.grad[3] == 0).all() and st.grad[1, 2] == 0 and st.grad[2, 0] == 0 and st.grad[2, 4] == 0


def test_kl_is_zero_at_target_and_positive_elsewhere():
    torch.manual_seed(7)
    u = torch.randn(3, 6, dtype=torch.float64)
    assert KLDivergence()(u, u).item() == pytest.approx(0.0, abs=1e-12)
    # same distribution through the target temperature: softmax(u / 3) == softmax(s) when s = u / 3
    assert KLDivergence(target_temperature=3.0)(u / 3.0, u).item() == pytest.approx(0.0, abs=1e-12)
    assert KLDivergence()(torch.randn(3, 6, dtype=torch.float64), u).item() > 1e-3


def test_kl_rejects_bad_temperature():
    with pytest.raises(ValueError, match="target_temperature"):
        KLDivergence(target_temperature=0.0)


# ---- inputs and registry --------------------------------------------------------

@pytest.mark.parametrize("cls", CONTRASTIVE + [KLDivergence])
def test_shape_errors(cls):
    with pytest.raises(ValueError, match="does not match"):
        cls()(torch.randn(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="2-D"):
        cls()(torch.randn(3), torch.zeros(3))
    with pytest.raises(ValueError, match="2-D"):
        cls()(torch.randn(2, 3, 4), torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="float"):
        cls()(torch.ones(2, 3, dtype=torch.long), torch.zeros(2, 3))


def test_bool_and_float_labels_agree():
    torch.manual_seed(8)
    scores = torch.randn(4, 6)
    labels = torch.rand(4, 6) < 0.4
    labels[:, 0] = True
    for cls in CONTRASTIVE:
        by_bool = cls()(scores, labels).item()
        assert by_bool == pytest.approx(cls()(scores, labels.float()).item(), rel=1e-6)
        assert by_bool == pytest.approx(cls()(scores, labels.long()).item(), rel=1e-6)


@pytest.mark.parametrize("cls", CONTRASTIVE)
def test_gradient_raises_positives_and_lowers_negatives(cls):
    scores = torch.tensor([[1.0, 2.0, 3.0, 0.5]], requires_grad=True)
    cls()(scores, torch.tensor([[1, 0, 0, 1]])).backward()
    g = scores.grad[0]
    # gradient descent raises a score with a negative gradient
    assert g[0] < 0 and g[3] < 0 and g[1] > 0 and g[2] > 0


def test_disj_gradient_on_positive_is_negative():
    scores = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    DisjInfoNCE()(scores, torch.tensor([[1, 0, 0]])).backward()
    # d/ds_0 [logsumexp(s) - s_0] = softmax(s)_0 - 1
    want = E(1) / (E(1) + E(2) + E(3)) - 1
    assert scores.grad[0, 0].item() == pytest.approx(want, rel=1e-6) and want < 0


def test_registry_and_get_loss():
    assert {"infonce", "conj_infonce", "disj_infonce", "kl"} <= set(LOSSES)
    assert LOSSES["infonce"] is InfoNCE and InfoNCE.name == "infonce"
    assert isinstance(get_loss("disj_infonce"), DisjInfoNCE)
    assert get_loss("kl", target_temperature=0.5).target_temperature == 0.5
    with pytest.raises(ValueError, match="unknown loss 'info_nce'.*conj_infonce, disj_infonce, dla, infonce, ips_listwise"):
        get_loss("info_nce")


def test_register_adds_a_loss_and_rejects_duplicates():
    @register("test_only_sum_of_positives")
    class SumOfPositives(RankingLoss):
        """l = -sum_{p in P} s_p."""

        def row_loss(self, scores, pos):
            return -(scores.masked_fill(~pos, 0.0)).sum(1)

    try:
        got = get_loss("test_only_sum_of_positives")(t([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1, 1], [0, 0]]))
        assert got.item() == pytest.approx(-3.0)  # the second row has no positive
        with pytest.raises(ValueError, match="registered twice"):
            register("test_only_sum_of_positives")(SumOfPositives)
    finally:
        LOSSES.pop("test_only_sum_of_positives", None)


@pytest.mark.parametrize(
    "name, cls",
    [("infonce", InfoNCE), ("conj_infonce", ConjInfoNCE), ("disj_infonce", DisjInfoNCE), ("kl", KLDivergence),
     ("pointwise_bce", PointwiseBCE), ("pointwise_ce", PointwiseCE)],
)
def test_loss_configs_instantiate(name, cls):
    path = CONF / "loss" / f"{name}.yaml"
    loss = instantiate(OmegaConf.load(path))
    assert type(loss) is cls and loss.name == name
    if cls is KLDivergence:
        assert loss.target_temperature == 1.0


def test_kl_gradient_stays_finite_with_log_likelihood_scale_utilities():
    """Utilities are answer log-likelihoods (hundreds apart); the masked columns must not put
    inf * 0 = NaN into the gradient. Gradient = R - U over the row's valid columns, by hand."""
    s = torch.tensor([[1.3767, 0.7913, -0.3731, -0.3920, 4.4714, 4.0280, 0.0498, 5.1206]], requires_grad=True)
    inf = float("-inf")
    u = torch.tensor([[inf, inf, inf, inf, -119.7431, -195.5844, -202.9641, -200.7612]])
    KLDivergence()(s, u).backward()
    assert torch.isfinite(s.grad).all()
    r = torch.softmax(s.detach()[0, 4:], 0)
    target = torch.softmax(u[0, 4:], 0)
    assert torch.allclose(s.grad[0, 4:], r - target, atol=1e-6)
    assert (s.grad[0, :4] == 0).all()


# ---- query weights ----------------------------------------------------------------

def test_query_weights_give_a_weighted_mean_of_rows():
    # rows: l_0 = -log(e^2/(e^2+e^0)), l_1 = -log(e^0/(e^0+e^1)); weights 3 and 1; row 2 has no positive
    l0 = -math.log(E(2) / (E(2) + E(0)))
    l1 = -math.log(E(0) / (E(0) + E(1)))
    scores = t([[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    labels = torch.tensor([[1, 0], [1, 0], [0, 0]])
    got = InfoNCE()(scores, labels, weights=t([3.0, 1.0, 100.0])).item()
    assert got == pytest.approx((3 * l0 + 1 * l1) / 4, abs=1e-12)
    assert InfoNCE()(scores, labels, weights=t([1.0, 1.0, 1.0])).item() == pytest.approx((l0 + l1) / 2, abs=1e-12)


# ---- pointwise losses against hand arithmetic ---------------------------------------

def bce(s: float, y: int) -> float:
    p = 1 / (1 + E(-s))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_pointwise_bce_by_hand():
    # pairs (2, pos), (-1, neg), (0.5, neg), (1, pos); one masked column; mean over the four valid pairs
    scores = t([[2.0, -1.0, NINF], [0.5, 1.0, 3.0]])
    labels = torch.tensor([[1, 0, 1], [0, 1, 0]])
    want = (bce(2.0, 1) + bce(-1.0, 0) + bce(0.5, 0) + bce(1.0, 1) + bce(3.0, 0)) / 5
    assert PointwiseBCE()(scores, labels).item() == pytest.approx(want, abs=1e-12)
    # pos_weight 3 multiplies the positive terms; weights [2, 1] weigh row 0's pairs twice
    want_pw = (3 * bce(2.0, 1) + bce(-1.0, 0) + bce(0.5, 0) + 3 * bce(1.0, 1) + bce(3.0, 0)) / 5
    assert PointwiseBCE(pos_weight=3.0)(scores, labels).item() == pytest.approx(want_pw, abs=1e-12)
    want_w = (2 * (bce(2.0, 1) + bce(-1.0, 0)) + bce(0.5, 0) + bce(1.0, 1) + bce(3.0, 0)) / (2 * 2 + 3)
    assert PointwiseBCE()(scores, labels, weights=t([2.0, 1.0])).item() == pytest.approx(want_w, abs=1e-12)


def test_pointwise_bce_is_stable_and_has_the_textbook_gradient():
    s = t([[60.0, -60.0]]).requires_grad_(True)
    loss = PointwiseBCE()(s, torch.tensor([[0, 1]]))
    assert loss.item() == pytest.approx(60.0, rel=1e-9)  # each pair costs about |s|
    loss.backward()
    # d/ds [softplus(s) - y s] / n = (sigma(s) - y) / n
    assert s.grad[0].tolist() == pytest.approx([0.5, -0.5], abs=1e-9)


def test_pointwise_ce_by_hand():
    # pair (0,0): logits [1,2,3], grade 2 -> -log(e^3/(e^1+e^2+e^3)); pair (0,1): grade 0 over [0,0,0] -> log 3
    # pair (1,0): no grade (-1), left out; pair (1,1): logits [2,0,0], grade 1 -> -log(e^0/(e^2+2))
    logits = t([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], [[9.0, 9.0, 9.0], [2.0, 0.0, 0.0]]])
    grades = torch.tensor([[2, 0], [-1, 1]])
    a = -math.log(E(3) / (E(1) + E(2) + E(3)))
    b = math.log(3.0)
    c = -math.log(1.0 / (E(2) + 2.0))
    assert PointwiseCE()(logits, grades).item() == pytest.approx((a + b + c) / 3, abs=1e-12)
    assert PointwiseCE()(logits, grades, weights=t([1.0, 2.0])).item() == pytest.approx((a + b + 2 * c) / 4, abs=1e-12)


def test_pointwise_ce_shape_and_grade_errors():
    with pytest.raises(ValueError, match="num_labels"):
        PointwiseCE()(torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="0..2"):
        PointwiseCE()(torch.randn(1, 2, 3), torch.tensor([[0, 3]]))
    with pytest.raises(ValueError, match="integers"):
        PointwiseCE()(torch.randn(1, 2, 3), torch.tensor([[0.0, 1.0]]))
    assert PointwiseCE()(torch.randn(1, 2, 3, requires_grad=True), torch.tensor([[-1, -1]])).item() == 0.0

"""Losses against hand arithmetic and an independent per-row reference; positive samplers."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from uptrain.cli import config_dir
from uptrain.losses import ConjInfoNCE, DisjInfoNCE, InfoNCE, KLDivergence, get_loss
from uptrain.sampling import PosAll, PosAvg, PosOne

E = math.exp


def t(x):
    return torch.tensor(x, dtype=torch.float64)


# ---- hand-computed values -------------------------------------------------------

def test_disj_by_hand():
    # scores [1,2,3], positives {2,3}: -log((e^2+e^3)/(e^1+e^2+e^3))
    want = -math.log((E(2) + E(3)) / (E(1) + E(2) + E(3)))
    assert DisjInfoNCE()(t([[1.0, 2.0, 3.0]]), torch.tensor([[0, 1, 1]])).item() == pytest.approx(want, abs=1e-12)


def test_conj_by_hand():
    # -[log(e^2/Z) + log(e^3/Z)], Z = e^1+e^2+e^3
    z = E(1) + E(2) + E(3)
    want = -(math.log(E(2) / z) + math.log(E(3) / z))
    assert ConjInfoNCE()(t([[1.0, 2.0, 3.0]]), torch.tensor([[0, 1, 1]])).item() == pytest.approx(want, abs=1e-12)


def test_infonce_by_hand_multi_positive():
    # each positive against the negative only: mean(-log(e^2/(e^2+e^1)), -log(e^3/(e^3+e^1)))
    want = 0.5 * (-math.log(E(2) / (E(2) + E(1))) - math.log(E(3) / (E(3) + E(1))))
    assert InfoNCE()(t([[1.0, 2.0, 3.0]]), torch.tensor([[0, 1, 1]])).item() == pytest.approx(want, abs=1e-12)


def test_kl_by_hand():
    # U = softmax([0, ln 3]) = [1/4, 3/4]; R = softmax([0, 0]) = [1/2, 1/2]
    want = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    got = KLDivergence()(t([[0.0, 0.0]]), t([[0.0, math.log(3.0)]])).item()
    assert got == pytest.approx(want, abs=1e-12)


# ---- independent reference ------------------------------------------------------

def reference(name: str, scores: np.ndarray, labels: np.ndarray) -> float:
    """Straightforward per-row loop with Python floats."""
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


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("name, cls", [("disj", DisjInfoNCE), ("conj", ConjInfoNCE), ("info", InfoNCE)])
def test_matches_reference_on_random_inputs(seed, name, cls):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(6, 9)) * 3
    labels = rng.random((6, 9)) < 0.3
    labels[0] = False  # a row without positive is left out of the mean
    labels[1, :] = False
    labels[1, 4] = True  # a row with exactly one positive
    got = cls()(torch.tensor(scores), torch.tensor(labels)).item()
    assert got == pytest.approx(reference(name, scores, labels), rel=1e-9)


def test_one_positive_all_three_equal_cross_entropy():
    torch.manual_seed(0)
    scores = torch.randn(5, 7, dtype=torch.float64)
    target = torch.tensor([0, 3, 6, 2, 1])
    labels = torch.nn.functional.one_hot(target, 7).bool()
    ce = torch.nn.functional.cross_entropy(scores, target).item()
    for cls in (InfoNCE, ConjInfoNCE, DisjInfoNCE):
        assert cls()(scores, labels).item() == pytest.approx(ce, rel=1e-12)


@pytest.mark.parametrize("cls", [InfoNCE, ConjInfoNCE, DisjInfoNCE])
def test_masked_column_equals_dropping_it_and_gradients_stay_finite(cls):
    torch.manual_seed(1)
    base = torch.randn(3, 5, dtype=torch.float64)
    labels = torch.zeros(3, 5, dtype=torch.bool)
    labels[:, 0] = True
    labels[1, 2] = True
    masked = base.clone()
    masked[:, 4] = float("-inf")
    masked[2, 3] = float("-inf")
    masked.requires_grad_(True)
    loss = cls()(masked, labels)
    loss.backward()
    assert torch.isfinite(masked.grad).all()
    assert (masked.grad[:, 4] == 0).all() and masked.grad[2, 3] == 0
    dropped = sum(
        cls()(base[i : i + 1, [j for j in range(5) if j != 4 and not (i == 2 and j == 3)]],
              labels[i : i + 1, [j for j in range(5) if j != 4 and not (i == 2 and j == 3)]]).item()
        for i in range(3)
    ) / 3
    assert loss.item() == pytest.approx(dropped, rel=1e-12)


@pytest.mark.parametrize("cls", [InfoNCE, ConjInfoNCE, DisjInfoNCE, KLDivergence])
def test_no_positive_anywhere_gives_zero_with_grad(cls):
    scores = torch.randn(2, 4, requires_grad=True)
    labels = torch.zeros(2, 4) if cls is not KLDivergence else torch.full((2, 4), float("-inf"))
    loss = cls()(scores, labels)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert (scores.grad == 0).all()


def test_bool_and_float_labels_agree():
    scores = torch.randn(4, 6)
    labels = torch.rand(4, 6) < 0.4
    labels[:, 0] = True
    for cls in (InfoNCE, ConjInfoNCE, DisjInfoNCE):
        assert cls()(scores, labels).item() == pytest.approx(cls()(scores, labels.float()).item(), rel=1e-6)


def test_disj_gradient_raises_positive_score():
    scores = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    DisjInfoNCE()(scores, torch.tensor([[1, 0, 0]])).backward()
    assert scores.grad[0, 0] < 0 and scores.grad[0, 1] > 0  # descent raises the positive, lowers negatives


def test_kl_matches_numpy_and_is_zero_at_target():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(3, 5))
    u = rng.normal(size=(3, 5))
    u[1, 2] = -np.inf  # masked utility
    want = []
    for i in range(3):
        keep = np.isfinite(u[i])
        pu = np.exp(u[i][keep] / 2.0) / np.exp(u[i][keep] / 2.0).sum()
        pr = np.exp(s[i][keep]) / np.exp(s[i][keep]).sum()
        want.append(np.sum(pu * np.log(pu / pr)))
    got = KLDivergence(target_temperature=2.0)(torch.tensor(s), torch.tensor(u)).item()
    assert got == pytest.approx(float(np.mean(want)), rel=1e-9)
    assert KLDivergence()(torch.tensor(u[0:1]), torch.tensor(u[0:1])).item() == pytest.approx(0.0, abs=1e-12)


def test_shape_errors_and_registry():
    with pytest.raises(ValueError, match="does not match"):
        InfoNCE()(torch.randn(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="2-D"):
        DisjInfoNCE()(torch.randn(3), torch.zeros(3))
    with pytest.raises(ValueError, match="known losses: conj_infonce, disj_infonce, infonce, kl"):
        get_loss("info_nce")
    assert isinstance(get_loss("disj_infonce"), DisjInfoNCE)


@pytest.mark.parametrize(
    "group, name, cls",
    [("loss", "infonce", InfoNCE), ("loss", "conj_infonce", ConjInfoNCE), ("loss", "disj_infonce", DisjInfoNCE),
     ("loss", "kl", KLDivergence), ("sampling", "pos_one", PosOne), ("sampling", "pos_avg", PosAvg),
     ("sampling", "pos_all", PosAll)],
)
def test_configs_instantiate(group, name, cls):
    assert isinstance(instantiate(OmegaConf.load(Path(config_dir()) / group / f"{name}.yaml")), cls)


# ---- positive sampling --------------------------------------------------------------

def test_pos_one_returns_one_member():
    rng = random.Random(0)
    draws = {PosOne().sample(["a", "b", "c"], rng)[0] for _ in range(50)}
    assert draws == {"a", "b", "c"}
    assert PosOne().sample([], rng) == []


def test_pos_avg_fits_ceil_of_mean_and_override():
    s = PosAvg()
    with pytest.raises(RuntimeError, match="before fit"):
        s.sample(["a"], random.Random(0))
    s.fit([["a"], ["a", "b"], ["a", "b", "c", "d"], []])  # mean over labelled queries 7/3 -> 3
    assert s.k_ == 3
    got = s.sample(["a", "b", "c", "d"], random.Random(0))
    assert len(got) == 3 and len(set(got)) == 3 and set(got) <= {"a", "b", "c", "d"}
    assert s.sample(["x"], random.Random(0)) == ["x"]
    fixed = PosAvg(k=2)
    fixed.fit([["a"] * 1])
    assert fixed.k_ == 2


def test_pos_all_is_a_seeded_permutation():
    items = list("abcdefgh")
    a = PosAll().sample(items, random.Random(5))
    b = PosAll().sample(items, random.Random(5))
    assert sorted(a) == items and a == b
    assert PosAll().sample(items, random.Random(6)) != a

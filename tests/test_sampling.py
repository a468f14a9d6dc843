"""Positive samplers: pos-one, pos-avg, pos-all (arXiv 2504.05220)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from uptrain.sampling import PosAll, PosAvg, PositiveSampler, PosOne

CONF = Path(__file__).resolve().parents[1] / "conf"
ITEMS = list("abcdefgh")


def fitted(sampler: PositiveSampler) -> PositiveSampler:
    sampler.fit([["a"], ["a", "b"], ["a", "b", "c", "d"], []])  # pos-avg: ceil(7/3) = 3
    return sampler


def test_names():
    assert (PosOne.name, PosAvg.name, PosAll.name) == ("pos_one", "pos_avg", "pos_all")


def test_pos_one_returns_exactly_one_member_and_covers_all():
    rng = random.Random(0)
    draws = [PosOne().sample(["a", "b", "c"], rng) for _ in range(60)]
    assert all(len(d) == 1 for d in draws)
    assert {d[0] for d in draws} == {"a", "b", "c"}


def test_pos_one_is_roughly_uniform_despite_duplicates():
    rng = random.Random(1)
    draws = [PosOne().sample(["a", "a", "a", "b"], rng)[0] for _ in range(2000)]
    # uniform over distinct ids: about 1000 each, not 1500/500
    assert 850 < draws.count("a") < 1150


def test_pos_avg_k_is_the_ceiling_of_the_mean_over_labelled_queries():
    s = PosAvg()
    s.fit([["a"], ["a", "b"], ["a", "b", "c", "d"]])  # counts 1, 2, 4: mean 7/3 -> 3
    assert s.k_ == 3
    s = PosAvg()
    s.fit([["a", "b"], ["c", "d"], [], []])  # empty queries do not count: mean 2 -> 2, not ceil(1) = 1
    assert s.k_ == 2
    s = PosAvg()
    s.fit([["a", "b", "c"], ["d", "e", "f"], ["g", "h", "i", "j"]])  # mean 10/3 -> 4
    assert s.k_ == 4


def test_pos_avg_samples_k_distinct_members():
    s = fitted(PosAvg())
    for seed in range(20):
        got = s.sample(["a", "b", "c", "d", "e"], random.Random(seed))
        assert len(got) == 3 and len(set(got)) == 3 and set(got) <= set("abcde")
    assert s.sample(["x"], random.Random(0)) == ["x"]  # fewer positives than k: all of them
    assert sorted(s.sample(["x", "y", "x"], random.Random(0))) == ["x", "y"]


def test_pos_avg_explicit_k_overrides_the_fit():
    s = PosAvg(k=2)
    assert len(s.sample(ITEMS, random.Random(0))) == 2  # usable without fit
    s.fit([ITEMS, ITEMS])
    assert s.k_ == 2
    assert len(s.sample(ITEMS, random.Random(0))) == 2


def test_pos_avg_before_fit_raises():
    with pytest.raises(RuntimeError, match="before fit"):
        PosAvg().sample(["a"], random.Random(0))


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_pos_avg_rejects_bad_k(bad):
    with pytest.raises(ValueError, match="k"):
        PosAvg(k=bad)


def test_pos_all_returns_a_permutation():
    got = PosAll().sample(ITEMS, random.Random(5))
    assert sorted(got) == ITEMS
    orders = {tuple(PosAll().sample(ITEMS, random.Random(seed))) for seed in range(10)}
    assert len(orders) > 1  # shuffled, not the input order every time
    assert sorted(PosAll().sample(["a", "b", "a"], random.Random(0))) == ["a", "b"]


@pytest.mark.parametrize("make", [PosOne, lambda: fitted(PosAvg()), PosAll])
def test_deterministic_for_a_seed(make):
    s = make()
    a = [s.sample(ITEMS, rng) for rng in [random.Random(42)] for _ in range(5)]
    b = [s.sample(ITEMS, rng) for rng in [random.Random(42)] for _ in range(5)]
    assert a == b
    c = [s.sample(ITEMS, rng) for rng in [random.Random(43)] for _ in range(5)]
    assert a != c


@pytest.mark.parametrize("make", [PosOne, lambda: fitted(PosAvg()), PosAll])
def test_empty_positives_give_empty_sample(make):
    assert make().sample([], random.Random(0)) == []


def test_input_is_not_modified():
    items = list(ITEMS)
    for s in (PosOne(), fitted(PosAvg()), PosAll()):
        s.sample(items, random.Random(0))
    assert items == ITEMS


@pytest.mark.parametrize("name, cls", [("pos_one", PosOne), ("pos_avg", PosAvg), ("pos_all", PosAll)])
def test_sampling_configs_instantiate(name, cls):
    sampler = instantiate(OmegaConf.load(CONF / "sampling" / f"{name}.yaml"))
    assert type(sampler) is cls and sampler.name == name
    if cls is PosAvg:
        assert sampler.k is None and sampler.k_ is None

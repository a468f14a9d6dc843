"""Parameter recovery: sample click logs from PBM, UBM and DBN with known parameters, fit each model,
and print true against fitted (a Markdown table), plus which registered model has the best
held-out perplexity on each log.

    python experiments/click_models/recovery.py [--sessions 200000] [--seed 0]

The synthetic log: 500 queries with 20 documents each, each session shows a random 10 of them in
random order (every document is seen at many ranks: the parameters are identifiable).
Examination-type parameters are compared after dividing by their rank-1 value (the likelihood
sees only products gamma x alpha, so the scale is free); attractiveness and satisfaction by the
mean absolute error over pairs with at least 20 impressions.
"""

from __future__ import annotations

import argparse

import numpy as np

from uptrain.clicks.bench import synthetic_serps
from uptrain.clicks.evaluate import perplexity
from uptrain.clicks.log import from_arrays
from uptrain.clicks.models import CLICK_MODELS, make
from uptrain.clicks.sampling import sample_dbn, sample_pbm, sample_ubm

R = 10


def logs(sessions: int, seed: int):
    rng = np.random.default_rng(seed)
    nq, per = 500, 20
    alpha = rng.uniform(0.05, 0.9, nq * per)
    sat = rng.uniform(0.1, 0.9, nq * per)
    exam = 1.0 / (np.arange(R) + 1.0) ** 0.7
    gamma = np.zeros((R, R + 1))
    gamma[:, 0] = exam
    for r in range(R):
        for j in range(r):  # previous click at rank j (column j + 1): examination recovers after a click
            gamma[r, j + 1] = min(1.0, 1.2 * exam[r] / exam[j] * exam[0])
    truth = {"pbm": {"examination": exam}, "ubm": {"gamma": gamma}, "dbn": {"gamma": 0.7}}
    out = {}
    for name in ("pbm", "ubm", "dbn"):
        query, docs = synthetic_serps(sessions, R, nq, per, rng)
        a = alpha[docs]
        if name == "pbm":
            clicked = sample_pbm(a, exam, rng)
        elif name == "ubm":
            clicked = sample_ubm(a, gamma, rng)
        else:
            clicked = sample_dbn(a, sat[docs], 0.7, rng)
        log = from_arrays(query, docs, clicked, [f"q{i}" for i in range(nq)], [f"d{i}" for i in range(nq * per)])
        out[name] = log
    return out, truth, alpha, sat


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    generated, truth, alpha, sat = logs(args.sessions, args.seed)
    print(f"| generating model | parameter | true | fitted | error |\n| --- | --- | --- | --- | ---: |")
    best = {}
    for name, log in generated.items():
        train, test = log.split(0.2)
        model = make(name, iterations=200).fit(train)
        p = model.params()
        if name == "pbm":
            t, f = truth["pbm"]["examination"], np.asarray(p["examination"])
            t, f = t / t[0], f / f[0]
            print(f"| pbm | examination / rank 1 | {_v(t)} | {_v(f)} | {np.abs(t - f).max():.4f} (max) |")
        elif name == "ubm":
            t, f = truth["ubm"]["gamma"], np.asarray(p["gamma"])
            t0, f0 = t[:, 0] / t[0, 0], f[:, 0] / f[0, 0]
            print(f"| ubm | gamma(r, no click above) / rank 1 | {_v(t0)} | {_v(f0)} | {np.abs(t0 - f0).max():.4f} (max) |")
            mask = np.tril(np.ones((R, R)), -1).astype(bool)
            err = np.abs(t[:, 1:][mask] / t[0, 0] - f[:, 1:][mask] / f[0, 0])
            print(f"| ubm | gamma(r, previous click r') / gamma(1), r' < r | {mask.sum()} cells | | "
                  f"{err.mean():.4f} (mean), {err.max():.4f} (max) |")
        else:
            print(f"| dbn | continuation gamma | 0.7 | {p['gamma']:.4f} | {abs(p['gamma'] - 0.7):.4f} |")
        table = model.relevance_table()
        index, pq, pd = train.pairs()
        counts = np.bincount(index[index >= 0], minlength=len(pq))
        keep = counts >= 20
        docs = np.array([int(train.doc_ids[d][1:]) for d in pd])[keep]
        fitted = np.array([table[(train.queries[q], train.doc_ids[d])] for q, d in zip(pq[keep], pd[keep])])
        want = alpha[docs] * (sat[docs] if name == "dbn" else 1.0)
        if name == "pbm":  # alpha absorbs the examination's scale
            fitted = fitted * np.asarray(p["examination"])[0] / truth["pbm"]["examination"][0]
        if name == "ubm":
            fitted = fitted * np.asarray(p["gamma"])[0][0] / truth["ubm"]["gamma"][0, 0]
        what = "attractiveness x satisfaction" if name == "dbn" else "attractiveness (scale-corrected)"
        print(f"| {name} | {what}, {keep.sum()} pairs | | | {np.abs(fitted - want).mean():.4f} (mean abs) |")
        ppl = {m: perplexity(make(m, iterations=200).fit(train), test)[0] for m in CLICK_MODELS}
        best[name] = sorted(ppl.items(), key=lambda kv: kv[1])[:3]
    print()
    for name, top in best.items():
        print(f"- log from {name}: best held-out perplexity " + ", ".join(f"{m} {v:.5f}" for m, v in top))


def _v(x) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in x) + "]"


if __name__ == "__main__":
    main()

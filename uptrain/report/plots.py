"""PNG plots of sweeps and runs (matplotlib, Agg backend: no display needed).

* :func:`curriculum_plot`: effectiveness against the share of human labels in
  curriculum training, one line per label family, the baseline as a horizontal
  line (Zhang et al., arXiv 2504.05220, Figure 3).
* :func:`in_vs_out_plot`: in-domain against out-of-domain nDCG@10, one labelled
  point per run (does a gain in domain carry over to other collections?).
* :func:`examination_plot`: a learned examination curve against a simulated log's own.
* :func:`perplexity_plot`: click models' held-out perplexity per rank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; also on machines without a display
import matplotlib.pyplot as plt  # noqa: E402

Values = Mapping[str, "float | None"]  # measure -> value


def curriculum_plot(
    series: Mapping[str, Sequence[tuple[float, Values]]],
    baseline: tuple[str, Values] | None,
    path: Path,
    panels: Sequence[str] = ("nDCG@10", "RR@10"),
) -> Path:
    """One panel per measure: x = human labels (%), y = in-domain value.

    ``series``: family -> [(human ratio, measure -> value)]; ``baseline``: (name,
    measure -> value), drawn as a dashed horizontal line (e.g. human: 100% human labels).
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, measure in zip(axes[0], panels):
        for family, points in sorted(series.items()):
            xy = sorted((x, v[measure]) for x, v in points if v.get(measure) is not None)
            if xy:
                ax.plot([p[0] for p in xy], [p[1] for p in xy], marker="o", label=family)
        if baseline is not None and baseline[1].get(measure) is not None:
            ax.axhline(baseline[1][measure], color="gray", linestyle="--", label=f"{baseline[0]} (baseline)")
        ax.set_xlabel("human labels in training (%)")
        ax.set_ylabel(f"in-domain {measure}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, path)


def in_vs_out_plot(points: Sequence[tuple[str, float, float]], path: Path) -> Path:
    """Scatter of (name, in-domain nDCG@10, out-of-domain average nDCG@10)."""
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter([p[1] for p in points], [p[2] for p in points])
    for name, x, y in points:
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
    ax.set_xlabel("in-domain nDCG@10")
    ax.set_ylabel("out-of-domain average nDCG@10")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    plt.close(fig)  # a sweep draws several figures in one process
    return path


def examination_plot(learned: Sequence[float], true: Sequence[float] | None, path: Path,
                     title: str = "Examination: learned by DLA against the simulator's") -> Path:
    """theta_k / theta_1 per rank: the curve a loss learned and, when the log is simulated, the
    simulator's own (normalised the same way)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ranks = list(range(1, len(learned) + 1))
    ax.plot(ranks, list(learned), marker="o", label="learned (theta_k / theta_1)")
    if true:
        t = [float(x) / float(true[0]) for x in true]
        ax.plot(list(range(1, len(t) + 1)), t, marker="s", linestyle="--", label="simulator (theta_k / theta_1)")
    ax.set_xlabel("rank")
    ax.set_ylabel("examination relative to rank 1")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def perplexity_plot(per_rank: Mapping[str, Sequence["float | None"]], test_sessions: int, path: Path) -> Path:
    """Click models' held-out perplexity per rank, one line per model (None: a rank never shown)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, at in per_rank.items():
        ax.plot(range(1, len(at) + 1), [float("nan") if x is None else x for x in at], marker="o", ms=3, label=name)
    ax.set_xlabel("rank")
    ax.set_ylabel("perplexity (unconditional)")
    ax.set_title(f"Click models: held-out perplexity per rank ({test_sessions} test sessions)")
    ax.grid(alpha=0.3)
    ax.legend(ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)

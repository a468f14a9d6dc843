"""The judge evaluation path (``eval.paths.judge``): systems judged by a relevance judge, the
judge checked against human labels, and the A/B measurement design (arXiv 2509.03764).

1. **Systems** (``judge.systems``: name -> a TREC run file, or the name of an uptrain experiment,
   whose final run over ``judge.collection`` is built or found in the cache). Each system's top
   ``judge.k`` of every evaluated query (the collection's queries with human judgments) is
   pooled; the union is graded once by the judge (:class:`~uptrain.judge.stages.JudgeLabelStage`).
2. **The judge** (``judge.grader``, the ``judge`` config group) is fitted first when it learns:
   out-of-fold by query on ``judge.collection`` (``judge.train`` null or the same name), or once on
   the collection ``judge.train`` names. Its grade scale 0..G is ``judge.max_grade`` or the
   highest human grade of its training collection (of the judged one for an untrained judge).
3. **Measures** per system: sDCG@K (:func:`uptrain.judge.measures.sdcg`, the paper's definition)
   and nDCG@K with judge labels, the same with human labels (an unjudged document counts as
   unlabelled: gain 0), Judged@K of the human labels; sDCG is cross-checked against ir_measures'
   ``SDCG`` (cwl_eval provider) on the raw grade scale where that provider is installed.
4. **Agreement** with the human labels (the paper's RQ1): label level over the pooled pairs a
   human judged; query level over (system, query) pairs of sDCG@K, overall and per segment
   (``judge.segments``); the error of paired system differences; system level.
5. **A/B design** (``judge.design``, the paper's RQ2): the judge's per-query sDCG@K of a control and
   a treatment system as the population, strata from a segmentation, SRS / proportional / Neyman
   samples at each size, MDEs, coverage, heterogeneous effects with Benjamini-Hochberg.

``metrics.json``: ``judge.label_agreement.{exact,within_one,kappa,...}``,
``judge.query_agreement.{kendall_tau,spearman_rho,error_mean,error_p10,error_median,error_p90}``,
``judge.system_agreement.kendall_tau``, ``judge.systems.<name>``, ``judge.cost``, ``judge.design``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from uptrain.errors import ConfigError, instantiate_as
from uptrain.evaluate.paths import EvalContext, EvalPath, PathResult

log = logging.getLogger("uptrain")

DESIGNS = ("srs", "proportional", "neyman")


def _plain(node) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def known_experiments() -> list[str]:
    from uptrain.cli import config_dir

    return sorted(p.stem for p in (Path(config_dir()) / "exp").glob("*.yaml") if not p.stem.startswith("_"))


def classify_systems(systems: Mapping[str, Any]) -> tuple[dict[str, Path], dict[str, str]]:
    """(name -> run file, name -> experiment): an existing file is a run file; otherwise the value
    must name an experiment of conf/exp/ (a ConfigError naming both readings when it is neither)."""
    files, exps = {}, {}
    known = None
    for name, value in (systems or {}).items():
        if value is None:
            continue
        text = str(value)
        path = Path(text).expanduser()
        if path.is_file():
            files[str(name)] = path
            continue
        known = known if known is not None else known_experiments()
        if text in known:
            exps[str(name)] = text
            continue
        raise ConfigError(
            f"judge.systems.{name} = {text!r} is neither an existing TREC run file nor an uptrain experiment "
            f"(known experiments: {', '.join(known)}). Give a path to a run file ('qid Q0 docid rank score tag') "
            "or an experiment name")
    return files, exps


def _int(value: Any, key: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{key} must be an integer of at least {least}, got {value!r}")
    return int(value)


class JudgePath(EvalPath):
    name = "judge"

    # ---- configuration ------------------------------------------------------------------
    @staticmethod
    def settings(cfg: DictConfig) -> dict:
        j = cfg.get("judge")
        if j is None or j.get("grader") is None:
            raise ConfigError("the judge path needs a judge: choose one with judge=cross_encoder, judge=llm or "
                              "judge=simulated (conf/judge/)")
        s = {k: _plain(v) for k, v in j.items() if k != "grader"}
        if not s.get("collection"):
            raise ConfigError("judge.collection is empty: name the collection (in eval.collections) whose queries "
                              "the systems' runs rank")
        known = set(cfg.eval.collections)
        for key in ("collection", "train"):
            if s.get(key) and s[key] not in known:
                raise ConfigError(f"judge.{key} = '{s[key]}' is not in eval.collections (known: {', '.join(sorted(known))}). "
                                  f"Add it with '+eval.collections.{s[key]}={{_target_: uptrain.data.TrecSource, ...}}'")
        if not s.get("systems"):
            raise ConfigError("judge.systems is empty: give the systems to judge, name -> TREC run file or uptrain "
                              "experiment (e.g. 'judge.systems={bm25: runs/bm25.txt, dense: zeroshot}')")
        s["k"] = _int(s.get("k", 10), "judge.k", 1)
        s["batch_queries"] = _int(s.get("batch_queries", 8), "judge.batch_queries", 1)
        if s.get("max_queries") is not None:
            s["max_queries"] = _int(s["max_queries"], "judge.max_queries", 2)
        if s.get("max_grade") is not None:
            s["max_grade"] = _int(s["max_grade"], "judge.max_grade", 1)
        design = s.get("design") or {}
        if design.get("enabled"):
            for key in ("control", "treatment"):
                if design.get(key) not in s["systems"]:
                    raise ConfigError(f"judge.design.{key} = {design.get(key)!r} is not one of judge.systems "
                                      f"({', '.join(s['systems'])})")
            if design["control"] == design["treatment"]:
                raise ConfigError("judge.design.control and judge.design.treatment name the same system")
            sizes = design.get("sizes") or []
            if not sizes or any(isinstance(n, bool) or not isinstance(n, int) or n < 4 for n in sizes):
                raise ConfigError(f"judge.design.sizes must be a list of sample sizes >= 4, got {sizes!r}")
            bad = [d for d in design.get("designs", DESIGNS) if d not in DESIGNS]
            if bad:
                raise ConfigError(f"judge.design.designs: unknown {bad}; known: {', '.join(DESIGNS)}")
        return s

    @staticmethod
    def make_judge(cfg: DictConfig):
        from uptrain.judge.base import Judge

        # not recursive: the nested _target_s (the model, the trainer, the annotator) are its settings
        judge = instantiate_as(cfg.judge.grader, Judge, "judge.grader", "uptrain.judge.Judge", _recursive_=False)
        return judge

    def validate(self, cfg: DictConfig) -> None:
        s = self.settings(cfg)
        classify_systems(s["systems"])
        self.make_judge(cfg).validate()
        for name in self._segment_names(cfg):
            self.segmenter(cfg, name, "judge.segments")
        design = cfg.judge.get("design") or {}
        if design.get("enabled"):
            self.segmenter(cfg, design.get("strata"), "judge.design.strata")

    # ---- running ------------------------------------------------------------------------
    def _runs(self, ctx: EvalContext, s: dict) -> dict[str, dict[str, dict[str, float]]]:
        from uptrain.retrieve.runfile import read_trec_run

        files, exps = classify_systems(s["systems"])
        runs = {}
        given = dict(getattr(ctx, "judge_runs", None) or {})
        for name in s["systems"]:
            if name in files:
                try:
                    runs[name] = read_trec_run(files[name])
                except ValueError as exc:
                    raise ConfigError(f"judge.systems.{name}: {exc}") from None
            elif name in exps:
                if name not in given:
                    raise ConfigError(f"judge.systems.{name} names the experiment '{exps[name]}', whose run was not "
                                      "built (run through the uptrain command, which builds it first)")
                runs[name] = given[name].value
        return runs

    def run(self, ctx: EvalContext) -> PathResult:
        from uptrain.judge.agreement import (agreement_markdown, error_histograms, label_agreement,
                                             paired_difference_errors, query_agreement, system_agreement)
        from uptrain.judge.cross_encoder import fold_of
        from uptrain.judge.measures import ir_measures_sdcg, ndcg, query_sdcg
        from uptrain.judge.stages import JudgeLabels, JudgeLabelStage
        from uptrain.retrieve.runfile import ranked

        cfg, s = ctx.cfg, self.settings(ctx.cfg)
        k = s["k"]
        judge = self.make_judge(cfg)
        data = ctx.data(s["collection"])
        coll = data.value
        train_name = s.get("train") or s["collection"]
        out_of_fold = judge.trainable and train_name == s["collection"]
        train_coll = ctx.data(train_name).value if judge.trainable else coll
        human_max = max((int(g) for rel in coll.qrels.values() for g in rel.values()), default=0)
        scale_from = train_coll if judge.trainable else coll
        G = s.get("max_grade") or max((int(g) for rel in scale_from.qrels.values() for g in rel.values()), default=0)
        if G < 1:
            raise ConfigError(f"judge: the collection {train_name} has no graded judgment above 0 to set the grade "
                              "scale; set judge.max_grade")
        judge.set_scale(G)

        # --- the pooled pairs --------------------------------------------------------------
        runs = self._runs(ctx, s)
        queries = [q for q in coll.queries if q in coll.qrels]
        counts = Counter()
        if s.get("max_queries") and len(queries) > s["max_queries"]:
            counts["evaluated queries cut by judge.max_queries"] = len(queries) - s["max_queries"]
            queries = queries[: s["max_queries"]]
        tops: dict[str, dict[str, list[str]]] = {}
        for name, run in runs.items():
            counts[f"{name}: run queries not in the collection"] = sum(1 for q in run if q not in coll.queries)
            top = {}
            for q in queries:
                docs = [d for d, _ in ranked(run.get(q, {}))][:k]
                if q not in run:
                    counts[f"{name}: evaluated queries without a ranking"] += 1
                if len(docs) < k and q in run:
                    counts[f"{name}: queries ranking fewer than k documents"] += 1
                top[q] = docs
            tops[name] = top
        pairs: dict[str, list[str]] = {}
        for q in queries:
            seen = []
            for top in tops.values():
                for d in top[q]:
                    if d not in seen:
                        seen.append(d)
            without = [d for d in seen if d not in coll.docs]
            counts["pooled documents without text (unlabelled)"] += len(without)
            pairs[q] = [d for d in seen if d in coll.docs]
        n_pairs = sum(len(v) for v in pairs.values())
        shared = sum(len(t[q]) for t in tops.values() for q in queries) - n_pairs - counts["pooled documents without text (unlabelled)"]
        counts = {k2: v for k2, v in counts.items() if v}
        for what, v in counts.items():
            log.warning("[judge] %s: %d", what, v)

        # --- the judge: fitted (out-of-fold or on judge.train), then grading -----------------
        labels = JudgeLabels()
        stage_stats, train_stats = [], []
        if judge.trainable:
            from uptrain.train.stage import BaseModelStage

            base = ctx.runner.run(BaseModelStage(judge.model_config()), label="judge_model")
            parts = ({f: {q: ds for q, ds in pairs.items() if fold_of(q, judge.folds, judge.seed) == f}
                      for f in range(judge.folds)} if out_of_fold else {None: pairs})
            for f, part in parts.items():
                tag = f"fold{f}" if f is not None else "all"
                model = ctx.runner.run(judge.train_stage(f), {"data": ctx.data(train_name), "init": base},
                                       label=f"judge_train_{tag}")
                train_stats.append(json.loads((model.path / "judge_train.json").read_text()))
                if not any(part.values()):
                    continue
                art = ctx.runner.run(JudgeLabelStage(judge, part, s["batch_queries"], part=tag),
                                     {"data": data, "model": model}, label=f"judge_label_{tag}")
                labels.merge(art.value)
                stage_stats.append(art.value.stats)
        else:
            art = ctx.runner.run(JudgeLabelStage(judge, pairs, s["batch_queries"]), {"data": data}, label="judge_label")
            labels.merge(art.value)
            stage_stats.append(art.value.stats)

        # --- measures per system -------------------------------------------------------------
        human = {q: {d: int(g) for d, g in coll.qrels.get(q, {}).items()} for q in queries}
        shift = bool(s.get("sdcg_shift", True))
        per_system, judge_vals, human_vals, rows = {}, {}, {}, []
        crosscheck = []
        for name, top in tops.items():
            jv, jc = query_sdcg(top, labels.grades, k, G, shift=shift, queries=queries, warn=f"{name}, judge labels")
            # documents without a human judgment are counted as Judged@k (the table), not warned about
            hv, hc = query_sdcg(top, human, k, max(human_max, 1), shift=shift, queries=queries, warn=False)
            jn = ndcg(top, labels.grades, k)
            hn = ndcg(top, human, k)
            judge_vals[name], human_vals[name] = jv, hv
            raw, _ = query_sdcg(top, labels.grades, k, G, shift=False, queries=queries, warn=False)
            ref = ir_measures_sdcg({q: top[q] for q in queries}, labels.grades, k, G)
            if ref is not None:
                crosscheck.extend(abs(ref.get(q, 0.0) - raw[q]) for q in queries)
            mean = lambda v: sum(v.values()) / len(v) if v else float("nan")  # noqa: E731
            per_system[name] = {f"sDCG@{k}": mean(jv), f"sDCG@{k}_human": mean(hv), f"nDCG@{k}": mean(jn),
                                f"nDCG@{k}_human": mean(hn), f"Judged@{k}_human": hc["judged_at_k"],
                                f"Judged@{k}": jc["judged_at_k"],
                                "counts_judge": {c: jc[c] for c in ("labelled", "unlabelled", "short_rankings",
                                                                    "queries_without_ranking")},
                                "unjudged_by_human": hc["unlabelled"]}
            rows.append(f"| {name} | " + " | ".join(f"{per_system[name][m]:.4f}" for m in (
                f"sDCG@{k}", f"sDCG@{k}_human", f"nDCG@{k}", f"nDCG@{k}_human", f"Judged@{k}", f"Judged@{k}_human")) + " |")

        # --- agreement -----------------------------------------------------------------------
        seg_of, seg_order = self._segments(ctx, {q: coll.queries[q] for q in queries})
        pooled_human = {q: {d: human[q][d] for d in ds if d in human.get(q, {})} for q, ds in pairs.items()}
        notes = []
        if human_max == G:
            label = label_agreement(pooled_human, labels.grades, G, segments=seg_of)
        else:
            label = None
            notes.append(f"the human grades run 0..{human_max} and the judge's 0..{G}: label-level agreement is not "
                         "computed (scales differ); query-level agreement compares sDCG on each scale")
        key = lambda name, q: f"{name}\x1f{q}"  # noqa: E731
        flat_j = {key(n, q): v for n, vs in judge_vals.items() for q, v in vs.items()}
        flat_h = {key(n, q): v for n, vs in human_vals.items() for q, v in vs.items()}
        flat_seg = {key(n, q): seg_of[q] for n in judge_vals for q in queries} if seg_of else None
        query = query_agreement(flat_j, flat_h, segments=flat_seg)
        for block in (label, query):  # segments in the segmenters' order (length buckets by length)
            if block and block.get("segments"):
                segs = block["segments"]
                block["segments"] = {n: segs[n] for n in seg_order if n in segs} | {
                    n: v for n, v in segs.items() if n not in seg_order}
        query["per_system"] = {n: query_agreement(judge_vals[n], human_vals[n]) for n in judge_vals}
        diffs = paired_difference_errors(judge_vals, human_vals) if len(runs) > 1 else None
        system = system_agreement(judge_vals, human_vals) if len(runs) > 1 else None

        # --- report --------------------------------------------------------------------------
        out = PathResult()
        plot = ctx.run_dir / "judge_errors.png"
        q_errors = [flat_j[x] - flat_h[x] for x in flat_j if x in flat_h]
        error_histograms(q_errors, (diffs or {}).get("pooled", {}).get("errors", []), plot,
                         title=f"{judge.name} judge vs human labels, sDCG@{k}")
        cost = self._cost(stage_stats, train_stats)
        simulated = "**SIMULATED judge: grades drawn from the human labels, not produced by a model.** " if judge.simulated else ""
        header = (f"| system | sDCG@{k} judge | sDCG@{k} human | nDCG@{k} judge | nDCG@{k} human | Judged@{k} judge | "
                  f"Judged@{k} human |\n| --- |" + " ---: |" * 6)
        how = ("out-of-fold (query-level %d-fold)" % judge.folds if out_of_fold else
               f"trained on {train_name}" if judge.trainable else "not trained")
        cc = (f" sDCG on the raw grade scale equals ir_measures' SDCG (cwl_eval) to {max(crosscheck):.1e} over "
              f"{len(crosscheck)} (system, query) values." if crosscheck else
              " ir_measures' SDCG cross-check not run (the cwl_eval provider is not installed: pip install cwl-eval).")
        out.sections[f"Judge: systems by judge and human labels (top {k})"] = (
            f"{simulated}Judge: {judge.describe()}, {how}; grades 0..{G}; {n_pairs} pooled pairs of {len(queries)} "
            f"queries judged once ({max(shared, 0)} repeats across systems saved). sDCG@{k}: grades mapped onto "
            f"{'1..%d (the paper)' % (G + 1) if shift else '0..%d' % G}, an infinite supply of top-grade documents; an "
            f"unlabelled document earns 0.{cc}"
            + ("".join(f" {n}." for n in notes))
            + (" Left out: " + "; ".join(f"{k2} {v}" for k2, v in counts.items()) + "." if counts else "")
            + "\n\n" + header + "\n" + "\n".join(rows))
        out.sections["Judge: agreement with human labels"] = (
            agreement_markdown(label, query, system) + f"\n\n![judge errors]({plot.name})")
        out.sections["Judge: cost"] = cost["text"]
        metrics = {
            "judge": judge.name, "simulated": judge.simulated, "describe": judge.describe(), "collection": s["collection"],
            "train": train_name if judge.trainable else None, "out_of_fold": out_of_fold, "k": k, "max_grade": G,
            "human_max_grade": human_max, "queries": len(queries), "pairs": n_pairs, "counts": counts,
            "systems": per_system, "label_agreement": label, "query_agreement": query,
            "paired_differences": {kk: v for kk, v in (diffs or {}).items() if kk != "pooled"} | (
                {"pooled": {kk: v for kk, v in diffs["pooled"].items() if kk != "errors"}} if diffs else {}),
            "system_agreement": system, "sdcg_crosscheck_max_abs": max(crosscheck) if crosscheck else None,
            "cost": {kk: v for kk, v in cost.items() if kk != "text"}, "notes": notes,
        }
        design = s.get("design") or {}
        if design.get("enabled"):
            metrics["design"] = self._design(ctx, s, design, judge_vals, coll, queries, out)
        out.metrics["judge"] = metrics
        (ctx.run_dir / "judge_labels.qrels").write_text("".join(
            f"{q} 0 {d} {g}\n" for q, ds in labels.grades.items() for d, g in ds.items()))
        return out

    # ---- parts --------------------------------------------------------------------------
    @staticmethod
    def _segment_names(cfg: DictConfig) -> list[str]:
        names = cfg.judge.get("segments")
        if names is None:
            return []
        if isinstance(names, str):
            return [names]
        return [str(n) for n in names]

    @staticmethod
    def segmenter(cfg: DictConfig, spec: Any, where: str):
        """A segmentation by name (of ``judge.segmenters``) or by config (with a ``_target_``), instantiated."""
        from uptrain.evaluate.segments import Segmentation

        known = cfg.judge.get("segmenters") or {}
        if isinstance(spec, str):
            if spec not in known:
                raise ConfigError(f"{where} names the segmenter '{spec}', which is not in judge.segmenters (known: "
                                  f"{', '.join(known)}); add one with '+judge.segmenters.{spec}={{_target_: ...}}'")
            node, label = known[spec], f"judge.segmenters.{spec}"
        elif spec is not None and (OmegaConf.is_config(spec) or isinstance(spec, Mapping)) and "_target_" in spec:
            node, label = spec, where
        else:
            raise ConfigError(f"{where} must name one of judge.segmenters ({', '.join(known)}) or be a segmentation "
                              f"config with a _target_, got {spec!r}")
        seg = instantiate_as(node, Segmentation, label, "uptrain.evaluate.segments.Segmentation")
        return seg

    def _segments(self, ctx: EvalContext, queries: Mapping[str, str]) -> tuple[dict[str, str] | None, list[str]]:
        """query id -> segment of the ``judge.segments`` segmenters (names joined by '|' when several),
        and the segment names in display order."""
        names = self._segment_names(ctx.cfg)
        if not names:
            return None, []
        segs = [self.segmenter(ctx.cfg, n, "judge.segments") for n in names]
        for seg in segs:
            seg.prepare(ctx)
        parts = [seg.assign(queries) for seg in segs]
        assignment = {q: "|".join(p[q] for p in parts) for q in queries}
        order: list[str] = [""]
        for seg, part in zip(segs, parts):
            own = seg.order() or sorted(set(part.values()))
            order = [f"{a}|{b}" if a else b for a in order for b in own]
        present = set(assignment.values())
        return assignment, [o for o in order if o in present] + sorted(present - set(order))

    @staticmethod
    def _cost(stage_stats: list[dict], train_stats: list[dict]) -> dict:
        pairs = sum(int(st.get("pairs", 0)) for st in stage_stats)
        seconds = sum(float(st.get("seconds", 0.0)) for st in stage_stats)
        train_seconds = sum(float(st.get("seconds", 0.0)) for st in train_stats)
        train_pairs = sum(int(st.get("pairs", 0)) for st in train_stats)
        prompts = sum(int(st.get("prompts", 0)) for st in stage_stats)
        rate = pairs / seconds if seconds > 0 else None
        text = (f"Grading: {pairs} pairs in {seconds:.1f} s" + (f" ({rate:.2f} pairs/s)" if rate else "")
                + (f", {prompts} prompts" if prompts else "") + "; the time of a cached artifact is its first build's.")
        if train_stats:
            text += (f" Training: {len(train_stats)} model(s), {train_pairs} training pairs in total, "
                     f"{train_seconds:.1f} s; final losses "
                     + ", ".join("n/a" if st.get("final_loss") is None else f"{st['final_loss']:.3f}" for st in train_stats) + ".")
        return {"pairs": pairs, "seconds": round(seconds, 3), "pairs_per_second": round(rate, 3) if rate else None,
                "prompts": prompts, "train_models": len(train_stats), "train_pairs": train_pairs,
                "train_seconds": round(train_seconds, 1), "text": text}

    def _design(self, ctx: EvalContext, s: dict, design: dict, judge_vals: dict, coll, queries: list[str],
                out: PathResult) -> dict:
        from uptrain.judge.design import (design_table_markdown, evaluate_designs, heterogeneous_effects,
                                          heterogeneous_markdown, mde_curve, mde_plot)
        from uptrain.judge.strata import strata_of

        k = s["k"]
        control, treatment = design["control"], design["treatment"]
        seg = self.segmenter(ctx.cfg, ctx.cfg.judge.design.get("strata"), "judge.design.strata")
        seg.prepare(ctx)
        strata, strata_stats = strata_of(seg, {q: coll.queries[q] for q in queries}, min_size=int(design.get("min_stratum", 2)))
        designs = list(design.get("designs", DESIGNS))
        sizes = [int(n) for n in design["sizes"]]
        kw = dict(repeats=int(design.get("repeats", 500)), pilot_fraction=float(design.get("pilot_fraction", 0.1)),
                  seed=int(design.get("seed", 0)), alpha=float(design.get("alpha", 0.05)),
                  power=float(design.get("power", 0.8)))
        level = judge_vals[control]
        diff = {q: judge_vals[treatment][q] - judge_vals[control][q] for q in queries}
        result: dict[str, Any] = {"control": control, "treatment": treatment, "population": len(queries),
                                  "strata": strata_stats, "sizes": sizes, **kw}
        tables = []
        base = sum(level.values()) / len(level)  # MDEs relative to the control's mean level, as the paper's
        result["mde_base"] = base
        for what, values in (("level", level), ("difference", diff)):
            rows = evaluate_designs(values, strata, sizes, designs, **kw, mde_base=base)
            result[what] = [r.to_dict() for r in rows]
            label = (f"sDCG@{k} of {control}" if what == "level" else f"paired difference of sDCG@{k}, {treatment} - {control}")
            tables.append(f"**{label}** (population of {len(queries)} queries)\n\n" + design_table_markdown(rows, label))
        curve_sizes = sorted({*sizes, *[n for n in (10, 20, 50, 100, 200, 500, 1000, 2000) if n <= len(queries)]})
        curves = mde_curve(diff, strata, curve_sizes, designs, alpha=kw["alpha"], power=kw["power"], mde_base=base)
        plot = mde_plot(curves, ctx.run_dir / "judge_mde.png", title=f"MDE of the sDCG@{k} difference against n (relative to {control}'s mean)")
        result["mde_curve"] = {d: [[int(n), float(m)] for n, m in c] for d, c in curves.items()}
        effects = heterogeneous_effects(judge_vals[control], judge_vals[treatment], strata,
                                        alpha=kw["alpha"], method=str(design.get("fdr", "bh")))
        result["heterogeneous"] = effects
        out.sections["Judge: A/B measurement design"] = (
            f"Population: the judge's per-query sDCG@{k} of {len(queries)} queries; strata: {type(seg).__name__} "
            f"({strata_stats}); sigma = sqrt(n Var(estimate)) over {kw['repeats']} seeded samples per design and n; "
            f"Neyman's S_h from a pilot SRS of {kw['pilot_fraction']:.0%}; coverage: the share of the "
            f"{1 - kw['alpha']:.0%} intervals that hold the population mean.\n\n" + "\n\n".join(tables)
            + f"\n\n![MDE against n]({Path(plot).name})\n\n**Heterogeneous effects per stratum** "
              f"({treatment} - {control}, paired t-tests, Benjamini-Hochberg)\n\n" + heterogeneous_markdown(effects))
        return result

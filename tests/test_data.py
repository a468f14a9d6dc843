"""Collection loaders on the real collections in the shared data folder.

ir_datasets fixes its home (IR_DATASETS_HOME) when it is imported, so everything that
imports it runs in a subprocess with a temporary home; the user's ~/.ir_datasets is
never touched and this process never imports ir_datasets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

import uptrain
from uptrain.data import (
    BeirFolderSource,
    Collection,
    DatasetUnavailableError,
    IrdsSource,
    TrecSource,
    seed_ir_datasets_home,
    subsample,
)
from uptrain.data.sources import natural_key
from uptrain.errors import UserError

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def _shared_data() -> Path | None:
    env = os.environ.get("UPTRAIN_DATA", "").strip()
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (candidate / "irds").is_dir() and (candidate / "raw").is_dir():
            return candidate.resolve()
    return None


DATA = _shared_data()
pytestmark = pytest.mark.skipif(
    DATA is None,
    reason="real collections not found: set UPTRAIN_DATA to the shared data folder (../shared/data with irds/ and raw/)",
)
SCIFACT_ZIP = DATA / "irds" / "beir" / "scifact" / "source.zip" if DATA else None


def _run_python(code: str, home: Path, data_root: Path | None, *args: str, timeout: float = 120) -> dict:
    """Run ``code`` with a fresh ir_datasets home; it prints one JSON line last."""
    env = dict(os.environ)
    env["IR_DATASETS_HOME"] = str(home)
    env.pop("UPTRAIN_DATA", None)
    if data_root is not None:
        env["UPTRAIN_DATA"] = str(data_root)
    env["IR_DATASETS_DL_DISABLE_PBAR"] = "true"
    package_root = str(Path(uptrain.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def irds(tmp_path_factory) -> dict:
    """scifact train/test, cranfield and a shrunk scifact loaded offline through ir_datasets."""
    base = tmp_path_factory.mktemp("irds")
    code = """
        import json, sys
        from pathlib import Path
        from uptrain.data import IrdsSource
        out = Path(sys.argv[1])
        specs = {}
        sources = [
            IrdsSource("beir/scifact/train", name="scifact_train", fields=["title", "text"]),
            IrdsSource("beir/scifact/test", name="scifact_test", fields=["title", "text"]),
            IrdsSource("cranfield", name="cranfield", fields=["text"]),
            IrdsSource("beir/scifact/test", name="scifact_small", fields=["title", "text"], max_queries=20, max_docs=300),
        ]
        for s in sources:
            s.load().save(out / s.name)
            specs[s.name] = s.spec()
        # the default fields must avoid Cranfield's title duplicated at the start of its text
        default = IrdsSource("cranfield").load()
        specs["cranfield_default_same"] = default.docs == IrdsSource("cranfield", fields=["text"]).load().docs
        print(json.dumps(specs))
    """
    specs = _run_python(code, base / "home", DATA, str(base / "out"))
    loaded = {name: Collection.load(base / "out" / name) for name in ("scifact_train", "scifact_test", "cranfield", "scifact_small")}
    return {"specs": specs, "home": base / "home", **loaded}


def _counts(c: Collection) -> tuple[int, int, int]:
    return len(c.docs), len(c.queries), sum(len(v) for v in c.qrels.values())


def _beir_corpus() -> dict[str, dict]:
    with zipfile.ZipFile(SCIFACT_ZIP) as z, z.open("scifact/corpus.jsonl") as f:
        return {row["_id"]: row for row in map(json.loads, f)}


# ----- ir_datasets IDs, offline -----


def test_irds_counts(irds):
    assert _counts(irds["scifact_train"]) == (5183, 809, 919)
    assert _counts(irds["scifact_test"]) == (5183, 300, 339)
    assert _counts(irds["cranfield"]) == (1400, 225, 1837)
    cran = irds["cranfield"]
    assert cran.stats["empty_docs"] == 2
    assert cran.docs["471"] == "" and cran.docs["995"] == ""
    assert Counter(r for rels in cran.qrels.values() for r in rels.values()) == {-1: 225, 1: 128, 2: 387, 3: 734, 4: 363}
    assert irds["specs"]["cranfield_default_same"] is True
    for name in ("scifact_train", "scifact_test"):
        assert irds[name].stats["queries_without_positives"] == 0
        assert irds[name].stats["qrels_unknown_docs"] == 0


def test_scifact_text_is_title_space_abstract(irds):
    corpus = _beir_corpus()
    docs = irds["scifact_test"].docs
    assert set(docs) == set(corpus)
    assert all(docs[d] == (row["title"] + " " + row["text"]).strip() for d, row in corpus.items())
    some = next(d for d, row in corpus.items() if row["title"] and row["text"])
    assert docs[some] == corpus[some]["title"] + " " + corpus[some]["text"]


def test_irds_subsample_keeps_judged_docs(irds):
    full, small = irds["scifact_test"], irds["scifact_small"]
    first20 = sorted(full.judged_queries(), key=natural_key)[:20]
    assert sorted(small.queries, key=natural_key) == first20
    judged = {d for q in first20 for d in full.qrels[q]}
    assert judged <= set(small.docs) and len(small.docs) == 300
    assert small.qrels == {q: full.qrels[q] for q in first20}
    spec, small_spec = irds["specs"]["scifact_test"], irds["specs"]["scifact_small"]
    assert (small_spec["max_queries"], small_spec["max_docs"]) == (20, 300)
    assert spec["dataset_id"] == small_spec["dataset_id"] == "beir/scifact/test"
    json.dumps(spec)


def test_seeding_copies_once(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("IR_DATASETS_HOME", str(home))
    monkeypatch.delenv("UPTRAIN_DATA", raising=False)
    assert seed_ir_datasets_home() == []  # no data folder named: nothing to do
    first = seed_ir_datasets_home(DATA)
    expected = sorted(p.relative_to(DATA / "irds") for p in (DATA / "irds").rglob("*") if p.is_file())
    assert sorted(p.relative_to(home) for p in first) == expected
    for p in first:
        assert p.is_file() and not p.is_symlink()
        assert p.stat().st_size == (DATA / "irds" / p.relative_to(home)).stat().st_size
    assert not list(home.rglob("*.tmp"))
    monkeypatch.setenv("UPTRAIN_DATA", str(DATA))
    assert seed_ir_datasets_home() == []


def test_irds_errors_are_clear_and_fast(tmp_path):
    code = """
        import json, time
        from uptrain.data import IrdsSource, DatasetUnavailableError
        out = {}
        for key, dataset_id in [("unknown", "beir/scifact/tset"), ("missing", "beir/scifact/test"), ("missing_cran", "cranfield")]:
            start = time.time()
            try:
                IrdsSource(dataset_id).load()
                out[key] = None
            except DatasetUnavailableError as exc:
                out[key] = {"message": str(exc), "seconds": time.time() - start}
        print(json.dumps(out))
    """
    out = _run_python(code, tmp_path / "empty_home", None, timeout=60)
    unknown = out["unknown"]["message"]
    assert "'beir/scifact/tset'" in unknown and "beir/scifact/test" in unknown.split("Close known IDs:")[1]
    assert "UPTRAIN_DATA" in unknown and "BeirFolderSource" in unknown
    for key in ("missing", "missing_cran"):
        assert out[key] is not None, f"{key}: loading without files or network did not fail"
        msg = out[key]["message"]
        assert out[key]["seconds"] < 10
        assert "UPTRAIN_DATA" in msg and "irds/" in msg and "download" in msg and "TrecSource" in msg
    assert "'beir/scifact/test'" in out["missing"]["message"]
    assert "'cranfield'" in out["missing_cran"]["message"]


# ----- local files: TREC and BEIR folders, through the configs -----


@pytest.fixture()
def data_env(monkeypatch):
    monkeypatch.setenv("UPTRAIN_DATA", str(DATA))


def _eval_source(name: str):
    return instantiate(OmegaConf.load(CONF / "eval_data" / f"{name}.yaml"))


@pytest.fixture(scope="module")
def npl() -> Collection:
    raw = DATA / "raw" / "vaswani_npl"
    return TrecSource(raw / "doc-text.trec", raw / "query-text.trec", raw / "qrels", name="npl").load()


def test_npl_and_noveleval_from_configs(data_env):
    npl = _eval_source("npl")
    assert isinstance(npl, TrecSource)
    c = npl.load()
    assert _counts(c) == (11429, 93, 2083)
    assert c.queries["1"] == "MEASUREMENT OF DIELECTRIC CONSTANT OF LIQUIDS BY THE USE OF MICROWAVE TECHNIQUES"
    assert c.docs["1"].startswith("compact memories have flexible capacities")
    nov = _eval_source("noveleval").load()
    assert _counts(nov) == (420, 21, 420)
    assert Counter(r for rels in nov.qrels.values() for r in rels.values()) == {0: 290, 1: 40, 2: 90}
    # one passage holds tab-separated table cells: only the first tab separates the id
    assert "\t" in nov.docs["14-17"] and nov.docs["14-17"].startswith('"Top earning footballers')
    assert all(v == 0 for k, v in nov.stats.items() if k != "name")


def test_irds_configs_instantiate():
    train = instantiate(OmegaConf.load(CONF / "data" / "scifact.yaml").train)
    assert isinstance(train, IrdsSource) and train.spec()["dataset_id"] == "beir/scifact/train"
    assert train.fields == ["title", "text"] and train.name == "scifact_train"
    for name, dataset_id in (("scifact_test", "beir/scifact/test"), ("cranfield", "cranfield")):
        src = _eval_source(name)
        assert isinstance(src, IrdsSource) and src.dataset_id == dataset_id and src.name == name


def test_subsample_rule_and_spec(npl, data_env):
    small = subsample(npl, max_queries=10, max_docs=500)
    first10 = sorted(npl.judged_queries(), key=natural_key)[:10]
    assert list(small.queries) == first10 == [str(i) for i in range(1, 11)]
    judged = {d for q in first10 for d in npl.qrels[q]}
    assert judged <= set(small.docs) and len(small.docs) == 500
    order = list(npl.docs)
    assert list(small.docs) == sorted(small.docs, key=order.index)  # corpus order kept
    assert all(small.docs[d] == npl.docs[d] for d in small.docs)
    tiny = subsample(npl, max_queries=10, max_docs=5)
    assert set(tiny.docs) == judged  # judged documents are never dropped
    only_docs = subsample(npl, max_docs=100)
    assert len(only_docs.queries) == 93 and len(only_docs.docs) >= 100
    assert subsample(npl) is npl
    with pytest.raises(ValueError):
        subsample(npl, max_queries=0)

    specs = [
        _eval_source("npl").spec(),
        TrecSource(**{**_npl_args(), "max_queries": 10}).spec(),
        TrecSource(**{**_npl_args(), "max_queries": 10, "max_docs": 500}).spec(),
        TrecSource(**{**_npl_args(), "fields": ["text"]}).spec(),
    ]
    assert len({json.dumps(s, sort_keys=True) for s in specs}) == len(specs)
    assert specs[0] == TrecSource(**_npl_args()).spec()  # same files and settings, same key
    assert specs[2]["max_queries"] == 10 and specs[2]["max_docs"] == 500
    loaded = TrecSource(**{**_npl_args(), "max_queries": 10, "max_docs": 500}).load()
    assert loaded.docs == small.docs and loaded.qrels == small.qrels


def _npl_args() -> dict:
    raw = DATA / "raw" / "vaswani_npl"
    return {"docs": raw / "doc-text.trec", "topics": raw / "query-text.trec", "qrels": raw / "qrels", "name": "npl"}


def test_trec_counts_and_drops_bad_qrels(tmp_path, caplog):
    (tmp_path / "docs.trec").write_text(
        "<DOC>\n<DOCNO> d1 </DOCNO>\n<TITLE>Aspirin</TITLE>\n<TEXT>\nreduces <b>heart</b> attacks\n</TEXT>\n</DOC>\n"
        "<DOC><DOCNO>d2</DOCNO>plain text only</DOC>\n"
        "<DOC>\n<DOCNO>d3</DOCNO>\n\n</DOC>\n"
        "<DOC>\n<DOCNO>d2</DOCNO>a repeated id</DOC>\n"
    )
    (tmp_path / "topics.trec").write_text(
        "<top>\n<num> Number: 101\n<title> Topic: aspirin\n\n<desc> Description:\nheart attack prevention\n</top>\n"
        "<top><num>102</num><title>no relevant documents</title></top>\n"
    )
    (tmp_path / "qrels").write_text(
        "101 0 d1 1\n101 0 d2 0\n101 0 d9 1\n999 0 d1 1\n102 0 d3 0\n101 0 d1 2\n"
    )
    src = TrecSource(tmp_path / "docs.trec", tmp_path / "topics.trec", tmp_path / "qrels", name="tiny")
    with caplog.at_level("WARNING", logger="uptrain.data"):
        c = src.load()
    assert c.docs == {"d1": "Aspirin reduces  heart  attacks", "d2": "plain text only", "d3": ""}
    assert c.queries == {"101": "aspirin", "102": "no relevant documents"}
    assert c.qrels == {"101": {"d1": 1, "d2": 0}, "102": {"d3": 0}}
    assert c.stats["qrels_unknown_docs"] == 1 and c.stats["qrels_unknown_queries"] == 1
    assert c.stats["empty_docs"] == 1 and c.stats["duplicate_doc_ids"] == 1
    assert c.stats["duplicate_qrels"] == 1 and c.stats["queries_without_positives"] == 1
    assert c.judged_queries() == ["101"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum("unknown document" in w for w in warnings) == 1 and any(": 1 qrels naming an unknown document" in w for w in warnings)
    both = TrecSource(tmp_path / "docs.trec", tmp_path / "topics.trec", tmp_path / "qrels", name="tiny", topic_field=["title", "desc"])
    assert both.load().queries["101"] == "aspirin heart attack prevention"


def test_missing_local_file_names_collection_path_and_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("UPTRAIN_DATA", str(tmp_path / "nowhere"))
    src = _eval_source("noveleval")
    with pytest.raises(DatasetUnavailableError) as err:
        src.load()
    msg = str(err.value)
    assert "'noveleval'" in msg and str(tmp_path / "nowhere" / "raw" / "noveleval" / "corpus.tsv") in msg
    # the remedies a user can apply without editing the installed package's files
    assert "UPTRAIN_DATA" in msg and "eval.collections.noveleval.docs=" in msg
    assert "'+eval.collections.NAME={_target_: uptrain.data.TrecSource" in msg
    assert "--config-dir DIR" in msg and "hydra.searchpath=[file://DIR]" in msg
    assert "conf/eval_data" not in msg and "site-packages" not in msg
    assert isinstance(err.value, UserError)
    monkeypatch.setenv("UPTRAIN_DATA", "")
    with pytest.raises(DatasetUnavailableError, match="set but empty"):
        _eval_source("npl").spec()
    with pytest.raises(DatasetUnavailableError, match="BEIR corpus"):
        BeirFolderSource(tmp_path, split="test", name="nobeir").load()


def test_beir_folder_round_trip(tmp_path):
    corpus = _beir_corpus()
    with zipfile.ZipFile(SCIFACT_ZIP) as z:
        rows = z.read("scifact/qrels/test.tsv").decode().splitlines()
        queries_jsonl = z.read("scifact/queries.jsonl")
    header, body = rows[0], [r.split("\t") for r in rows[1:]]
    keep_q = list(dict.fromkeys(q for q, _, _ in body))[:10]
    qrels_rows = [r for r in body if r[0] in keep_q]
    doc_ids = list(dict.fromkeys([d for _, d, _ in qrels_rows] + list(corpus)[:200]))
    folder = tmp_path / "scifact_slice"
    (folder / "qrels").mkdir(parents=True)
    (folder / "qrels" / "test.tsv").write_text("\n".join([header] + ["\t".join(r) for r in qrels_rows]) + "\n")
    (folder / "queries.jsonl").write_bytes(queries_jsonl)
    with open(folder / "corpus.jsonl", "w") as f:
        for d in doc_ids:
            f.write(json.dumps(corpus[d]) + "\n")

    src = BeirFolderSource(folder, split="test")
    c = src.load()
    assert c.name == "scifact_slice_test"
    assert list(c.queries) != [] and set(c.queries) == set(keep_q)  # only the split's queries
    assert set(c.docs) == set(doc_ids)
    assert all(c.docs[d] == (corpus[d]["title"] + " " + corpus[d]["text"]).strip() for d in doc_ids)
    expected: dict[str, dict[str, int]] = {}
    for q, d, r in qrels_rows:
        expected.setdefault(q, {})[d] = int(r)
    assert c.qrels == expected
    assert src.spec()["split"] == "test" and src.spec()["files"]["corpus"]["file"] == "corpus.jsonl"

    c.save(tmp_path / "saved")
    assert Collection.load(tmp_path / "saved") == c


def test_collection_save_load_round_trip(npl, tmp_path):
    small = subsample(npl, max_queries=5, max_docs=50)
    for coll, where in ((npl, "full"), (small, "small")):
        coll.save(tmp_path / where)
        back = Collection.load(tmp_path / where)
        assert back == coll
        assert list(back.docs) == list(coll.docs) and list(back.queries) == list(coll.queries)


def test_relevance_map_turns_codes_into_gains(tmp_path):
    """Cranfield-style codes (1 = best): the map reverses them and enters the cache key."""
    (tmp_path / "docs.tsv").write_text("d1\tbest\nd2\tweak\nd3\tnone\n")
    (tmp_path / "topics.tsv").write_text("q1\tquery\n")
    (tmp_path / "qrels").write_text("q1 0 d1 1\nq1 0 d2 4\nq1 0 d3 -1\n")
    args = (tmp_path / "docs.tsv", tmp_path / "topics.tsv", tmp_path / "qrels")
    plain = TrecSource(*args, name="codes")
    mapped = TrecSource(*args, name="codes", relevance_map={1: 4, 2: 3, 3: 2, 4: 1, -1: 0})
    assert plain.load().qrels == {"q1": {"d1": 1, "d2": 4, "d3": -1}}
    assert mapped.load().qrels == {"q1": {"d1": 4, "d2": 1, "d3": 0}}
    assert plain.spec() != mapped.spec()
    from uptrain.cli import config_dir

    cfg = OmegaConf.load(Path(config_dir()) / "eval_data" / "cranfield.yaml")
    assert dict(cfg.relevance_map) == {1: 4, 2: 3, 3: 2, 4: 1, -1: 0}

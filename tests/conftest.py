"""Shared fixtures: the real data folder, an isolated cache, and the installed ``uptrain`` command."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Entry:  # the fields of a pool entry the label sources read
    query_id: str
    query: str
    positives: tuple
    candidates: tuple


REPO = Path(__file__).resolve().parent.parent


def shared_data() -> Path | None:
    env = os.environ.get("UPTRAIN_DATA")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (candidate / "irds").is_dir():
            return candidate.resolve()
    return None


DATA = shared_data()
needs_data = pytest.mark.skipif(DATA is None, reason="the shared data folder (../shared/data) is not present")

# A run small enough for a test is `profile=tiny` (conf/profile/tiny.yaml: the smoke profile
# shrunk further, LLM annotation included), so a test's command reads like a user's:
#   uptrain +exp=human profile=tiny
# What cannot live in that profile: switching the significance baseline off. An experiment's own
# eval.baseline (conf/exp/human.yaml: zeroshot) is composed after the profile and wins over it,
# and a profile only shrinks what the experiment asks for. Tests that do not test markers skip the
# baseline's run with this override on the command line.
NO_BASELINE = "eval.baseline=null"
TINY = ["profile=tiny", NO_BASELINE]

# Kept for tests that still add it: the tiny LLM annotation is part of profile=tiny now.
ANNOTATE_TINY: list[str] = []

# A handful of passages for model-level tests.
DOCS = {
    "d1": "aspirin reduces the risk of heart attack",
    "d2": "low dose aspirin and cardiovascular events",
    "d3": "the eiffel tower is in paris",
    "d4": "photosynthesis converts light into chemical energy",
    "d5": "vitamin d deficiency and bone fractures",
    "d6": "calcium intake in elderly women",
    "d7": "a history of the roman empire",
    "d8": "neural networks learn representations",
}


def uptrain_command() -> list[str]:
    exe = Path(sys.executable).parent / "uptrain"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "uptrain.cli"]


@pytest.fixture(scope="session")
def irds_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ir_datasets_home")


@pytest.fixture()
def cli_env(tmp_path, irds_home) -> dict:
    """Environment for a CLI run: its own cache, a shared seeded ir_datasets home, offline."""
    env = dict(os.environ)
    env.update(
        UPTRAIN_CACHE_DIR=str(tmp_path / "cache"),
        IR_DATASETS_HOME=str(irds_home),
        HF_HUB_OFFLINE="1",
        WANDB_MODE="offline",
        TOKENIZERS_PARALLELISM="false",
    )
    if DATA is not None:
        env["UPTRAIN_DATA"] = str(DATA)
    return env


def run_cli(args: list[str], env: dict, cwd: Path, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        uptrain_command() + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"uptrain {' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc

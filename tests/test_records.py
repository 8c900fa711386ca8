"""Every committed record is valid under today's configuration normaliser."""

import json
from pathlib import Path

import pytest

from lib.classify import ClassifierConfig
from lib.config import normalise
from lib.recall.experiment import RecallConfig
from lib.store import config_hash

ROOT = Path(__file__).resolve().parents[1] / "results" / "cpu"
RECORDS = sorted(ROOT.glob("*/*.json"))
CLASSES = {"recall": RecallConfig, "vit-positions": ClassifierConfig}


def test_there_are_committed_records():
    assert len(RECORDS) > 100


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_record_sits_at_the_hash_of_its_normalised_config(path):
    record = json.loads(path.read_text())
    name = path.parent.name
    assert record["name"] == name and set(record) >= {"config", "result", "created"}
    config = record["config"]
    if name in CLASSES:
        assert normalise(CLASSES[name], config) == config, "stored configs are already normalised"
    assert path.name == f"{name}-{config_hash(config)}.json"



def test_committed_checkpoints_belong_to_runs_in_progress():
    """Committed checkpoints (README) are of unfinished runs: a classifier's is named
    after its record and deleted when the record is written; a recall run's is kept
    only while its stored records stopped at the cap (a raised cap continues it)."""
    from lib import checkpoint
    from lib.recall.experiment import checkpoint_name

    recall = [json.loads(p.read_text()) for p in (ROOT / "recall").glob("recall-*.json")]
    for path in sorted((ROOT / ".checkpoints").glob("*.pt")):
        state = checkpoint.load(path)
        assert state is not None and state["step"] > 0, path.name
        experiment = path.stem.rsplit("-", 1)[0]
        assert (ROOT / experiment).is_dir(), f"{path.name}: no experiment {experiment}"
        assert not (ROOT / experiment / f"{path.stem}.json").exists(), f"{path.name}: its record exists"
        mine = [r for r in recall if checkpoint_name(r["config"]) == path.stem]
        assert all(r["result"]["stop_reason"] == "cap" for r in mine), f"{path.name}: its run stopped"


def test_every_recall_record_is_made_by_the_plan():
    """Every committed recall record is a learning-rate sweep run, a planned run or a
    probe of lib.recall.plan (on some rung of its cap ladder): one command remakes it."""
    from lib.recall.plan import (FAMILIES, cap_ladder, learning_rates, probe_configs,
                                 problem_configs, sweep_configs)
    from lib.store import ResultsStore

    lrs = {f: v["use"] for f, v in learning_rates(ResultsStore.committed("cpu"), "cpu").items()}
    configs = [c for f in FAMILIES for c in sweep_configs("cpu", f)]
    configs += [c for p in (1, 2, 3) for c in problem_configs(p, "cpu", lrs)]
    configs += [c for group in probe_configs("cpu", lrs).values() for c in group]
    made = {config_hash(rung) for c in configs for rung in cap_ladder(c, "cpu")}
    stray = [p.name for p in sorted((ROOT / "recall").glob("recall-*.json"))
             if config_hash(json.loads(p.read_text())["config"]) not in made]
    assert not stray, f"records no command of lib.recall.plan makes: {stray}"

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



def plan_configs() -> list[dict]:
    """Every recall configuration lib.recall.plan makes: sweeps, planned runs, probes."""
    from lib.recall.plan import FAMILIES, learning_rates, probe_configs, problem_configs, sweep_configs
    from lib.store import ResultsStore

    lrs = {f: v["use"] for f, v in learning_rates(ResultsStore.committed("cpu"), "cpu").items()}
    configs = [c for f in FAMILIES for c in sweep_configs("cpu", f)]
    configs += [c for p in (1, 2, 3) for c in problem_configs(p, "cpu", lrs)]
    return configs + [c for group in probe_configs("cpu", lrs).values() for c in group]


def test_committed_checkpoints_belong_to_runs_in_progress():
    """Committed checkpoints (README) are of unfinished runs. A classifier's is named
    after its record and deleted when the record is written. A recall run's is named
    after its configuration without the cap: the configuration must be one the plan
    makes, and its stored records may only have stopped at a cap below the ladder's top
    (a raised cap continues from the checkpoint; a stopped run's is stale)."""
    from lib import checkpoint
    from lib.recall.experiment import checkpoint_name
    from lib.recall.plan import cap_ladder
    from lib.store import ResultsStore

    store = ResultsStore.committed("cpu")
    by_name = {checkpoint_name(c): c for c in plan_configs()}
    for path in sorted((ROOT / ".checkpoints").glob("*.pt")):
        if path.name.startswith(".tmp-"):  # a save in progress, never committed
            continue
        state = checkpoint.load(path)
        assert state is not None and state["step"] > 0, path.name
        experiment = path.stem.rsplit("-", 1)[0]
        assert experiment in ("recall", "vit-positions"), f"{path.name}: no run makes it"
        if experiment == "vit-positions":
            assert not (ROOT / experiment / f"{path.stem}.json").exists(), f"{path.name}: its record exists"
            continue
        assert path.stem in by_name, f"{path.name}: no configuration of lib.recall.plan has it"
        ladder = cap_ladder(by_name[path.stem], "cpu")
        stored = [store.get("recall", c) for c in ladder]
        assert stored[-1] is None, f"{path.name}: its run is at the ladder's top"
        assert all(r["result"]["stop_reason"] == "cap" for r in stored if r), f"{path.name}: its run stopped"


def test_every_recall_record_is_made_by_the_plan():
    """Every committed recall record is a learning-rate sweep run, a planned run or a
    probe of lib.recall.plan (on some rung of its cap ladder): one command remakes it."""
    from lib.recall.plan import cap_ladder

    made = {config_hash(rung) for c in plan_configs() for rung in cap_ladder(c, "cpu")}
    stray = [p.name for p in sorted((ROOT / "recall").glob("recall-*.json"))
             if config_hash(json.loads(p.read_text())["config"]) not in made]
    assert not stray, f"records no command of lib.recall.plan makes: {stray}"

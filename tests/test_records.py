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

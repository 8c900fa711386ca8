"""Re-key committed records under normalised configurations (one-off migration, kept for the record).

What it did (2026-11-29, lib restructure): before, a record was keyed by the
hash of its configuration exactly as the chapter spelled it, so two spellings of
one experiment (``position="none"`` given or left out) were two records, and a
default that a chapter did not write out was not part of the key. Now the
store normalises a configuration (:func:`lib.config.normalise`: defaults filled
in, values canonicalised) before hashing it. This script

1. reads every record of the experiments whose function now declares a
   configuration class,
2. normalises its stored configuration with that class,
3. checks that records mapping to one normalised configuration are the same
   experiment with the same result up to timings (then keeps the oldest and
   deletes the others: they were duplicates computed under two spellings),
4. rewrites the record's ``config`` (and adds ``rekeyed_from``: the old file
   name) and renames the file to the new hash.

No experiment is retrained; results are copied unchanged. The run of
2026-11-29 re-keyed 116 of 118 records (recall 75, vit-positions 36,
vit-positions-canvas 4, vit-attention 3) and removed 2 recall duplicates (the
Mamba learning-rate sweep had recomputed, under a shorter spelling, two
Problem 1/2 runs; histories and accuracies identical, only timings differ).
Running it again is a no-op (every record already sits at its normalised
key) until a configuration class gains a field.

Second run (2026-11-29, issue 17): ``ClassifierConfig`` gained ``val_fraction``,
``decay_exempt``, ``precision`` and ``compile``, whose defaults (0, False,
"fp32", False) are exactly what the older code did (no validation split, every
parameter decayed, fp32, eager). It re-keyed 43 records (vit-positions 36,
vit-positions-canvas 4, vit-attention 3), none retrained; ``rekeyed_from``
keeps the name each record had first. Usage::

    python scripts/rekey_records.py [--root results/cpu] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.classify import ClassifierConfig  # noqa: E402
from lib.config import normalise  # noqa: E402
from lib.recall.experiment import RecallConfig  # noqa: E402
from lib.store import canonical_json, config_hash  # noqa: E402


@dataclass(frozen=True)
class CanvasStudy(ClassifierConfig):  # as defined in chapters/data_mining/vit_positions.md
    canvas_sizes: list[int] = field(default_factory=lambda: [28])


@dataclass(frozen=True)
class AttentionStudy(ClassifierConfig):  # as defined in chapters/nndl_s4/vit_attention_maps.md
    digits: int = 4


TIMING = {"seconds", "steps_per_second", "length_eval_seconds", "train_seconds", "seconds_per_epoch"}


def without_timing(result: dict) -> str:
    """The result as canonical JSON without its wall-clock fields (which differ between identical runs)."""
    return canonical_json({k: v for k, v in result.items() if k not in TIMING})


CLASSES = {"recall": RecallConfig, "vit-positions": ClassifierConfig, "vit-positions-canvas": CanvasStudy,
           "vit-attention": AttentionStudy}


def rekey(root: Path, dry_run: bool) -> dict[str, int]:
    counts = {"records": 0, "renamed": 0, "unchanged": 0, "duplicates_removed": 0}
    for name, config_class in CLASSES.items():
        folder = root / name
        by_key: dict[str, list[tuple[Path, dict]]] = {}
        for path in sorted(folder.glob(f"{name}-*.json")):
            record = json.loads(path.read_text())
            config = normalise(config_class, record["config"])
            by_key.setdefault(config_hash(config), []).append((path, {**record, "config": config}))
            counts["records"] += 1
        for key, group in by_key.items():
            group.sort(key=lambda item: item[1]["created"])
            (path, record), duplicates = group[0], group[1:]
            for other_path, other in duplicates:
                same = without_timing(other["result"]) == without_timing(record["result"])
                print(f"{name}: {other_path.name} duplicates {path.name} (same result but for timings: {same})")
                if not same:
                    raise SystemExit("two records of one experiment disagree; resolve by hand before re-keying")
                counts["duplicates_removed"] += 1
                if not dry_run:
                    other_path.unlink()
            target = folder / f"{name}-{key}.json"
            if target == path:
                counts["unchanged"] += 1
                continue
            record.setdefault("rekeyed_from", path.name)
            counts["renamed"] += 1
            if not dry_run:
                target.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
                path.unlink()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1] / "results" / "cpu"))
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    print(rekey(Path(args.root), args.dry_run))


if __name__ == "__main__":
    main()

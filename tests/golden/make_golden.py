"""Write (or compare) the golden records of the trial redesign.

The golden set is a small grid on deterministic players (simulated models, scripted co-players) with
and without interventions and trait assessment, run through ``contagion run`` and ``contagion play``.
Its records, with the spec hash, the spec's layout and the timing fields normalised away, must not
change when the code that assembles a trial moves. Run ``python -m tests.golden.make_golden --write``
from the repository root to regenerate (only when the records are meant to change, with a reason).
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "records.json.gz"

GRID: dict[str, Any] = {
    "name": "golden",
    "models": ["sim:planted", "sim:null"],
    "games": ["prisoners-dilemma", "stag-hunt"],
    "compositions": {
        "all-default": ["default", "default", "default"],
        "one-malicious": ["default", "default", "malicious"],
        "scripted-defector": ["default", "default", "scripted:tit-for-tat"],
    },
    "interventions": ["none", "repeat-system:k=2", "sit:k=2,n=2", "sit-adaptive:m=1,threshold=0.05"],
    "rounds": 3,
    "chat_turns": [0, 1],
    "repetitions": 2,
    "seed": 11,
    "assessment": {"items": 3, "bootstrap": 100, "debias": True},
    "generation": {"max_tokens": 24, "temperature": 0.7, "seed": 0},
}

# the same grid without trait measurement (interventions that need no profile)
GRID_NO_TRAITS: dict[str, Any] = {
    **GRID, "name": "golden-no-traits", "measure_traits": False, "interventions": ["none", "repeat-system:k=1"],
    "models": ["sim:null"], "seed": 5,
}

PLAYS: list[list[str]] = [
    ["--game", "chicken", "-p", "sim:planted", "-p", "sim:planted", "-p", "malicious=sim:planted",
     "--rounds", "3", "--seed", "4", "-i", "sit:k=1,n=2"],
    ["--game", "prisoners-dilemma", "-p", "sim:null", "-p", "scripted:always-defect",
     "--rounds", "4", "--seed", "2", "--chat-turns", "0"],
]

# timing and cost fields, the version stamps, and the fields added since (``language_model``; ``strategy``,
# record schema 3)
TIMING = {"wall_seconds", "model_seconds", "seconds", "cost", "contagion_version", "spec_hash", "schema_version",
          "language_model", "strategy"}


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def canonical_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """One layout for a trial's spec, whether it is stored flat (game + intervention + assessment in one
    object) or as a trial (``game``, ``intervention`` and ``assessment`` parts)."""
    from contagion.traits.settings import AssessmentSettings

    flat: dict[str, Any] = {}
    for key, value in spec.items():
        if key == "game" and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    flat.pop("measure", None)  # whether traits are measured shows in the profiles themselves
    flat["assessment"] = AssessmentSettings.model_validate(flat.get("assessment") or {}).model_dump(mode="json")
    return flat


def normalise(record: dict[str, Any]) -> dict[str, Any]:
    out = _strip(record)
    out["spec"] = canonical_spec(out["spec"])
    return out


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "contagion", *args], capture_output=True, text=True, timeout=600)


def collect() -> dict[str, Any]:
    """Run the golden grids and plays; return their normalised records keyed by condition."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for grid in (GRID, GRID_NO_TRAITS):
            cfg = Path(tmp) / f"{grid['name']}.yaml"
            cfg.write_text(yaml.safe_dump(grid, sort_keys=False), encoding="utf-8")
            run_dir = Path(tmp) / grid["name"]
            proc = _cli("run", str(cfg), "--out", str(run_dir), "--no-progress")
            if proc.returncode != 0:
                raise RuntimeError(f"contagion run failed: {proc.stdout}\n{proc.stderr}")
            jsonl = Path(tmp) / f"{grid['name']}.jsonl"
            proc = _cli("export", str(run_dir), "--format", "jsonl", "--out", str(jsonl))
            if proc.returncode != 0:
                raise RuntimeError(f"contagion export failed: {proc.stdout}\n{proc.stderr}")
            for line in jsonl.read_text(encoding="utf-8").splitlines():
                rec = json.loads(line)
                labels = rec["labels"]
                key = "|".join(str(labels[k]) for k in ("model", "game", "composition", "intervention",
                                                         "chat_turns", "rep"))
                out[f"{grid['name']}|{key}"] = normalise(rec)
        for i, args in enumerate(PLAYS):
            path = Path(tmp) / f"play{i}.json"
            proc = _cli("play", *args, "--quiet", "--out", str(path))
            if proc.returncode != 0:
                raise RuntimeError(f"contagion play failed: {proc.stdout}\n{proc.stderr}")
            out[f"play{i}"] = normalise(json.loads(path.read_text(encoding="utf-8")))
    return out


def load_golden() -> dict[str, Any]:
    return json.loads(gzip.decompress(GOLDEN.read_bytes()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="write the golden file instead of comparing")
    args = parser.parse_args()
    records = collect()
    if args.write:
        GOLDEN.write_bytes(gzip.compress((json.dumps(records, indent=0, sort_keys=True) + "\n").encode(), mtime=0))
        print(f"wrote {len(records)} records to {GOLDEN}")
        return
    golden = load_golden()
    diff = sorted(k for k in set(golden) | set(records) if golden.get(k) != records.get(k))
    print(f"{len(records)} records, {len(diff)} differ: {diff[:10]}")


if __name__ == "__main__":
    main()


def explain(limit: int = 40) -> list[tuple[int, str]]:
    """Where the records differ from the golden ones: (count, 'record kind | field path') pairs, most common
    first — to check that a deliberate change changed only what it should before re-basing the golden."""
    import collections
    import re

    def paths(a: Any, b: Any, path: str = "") -> list[str]:
        if isinstance(a, dict) and isinstance(b, dict):
            return [p for k in set(a) | set(b) for p in paths(a.get(k), b.get(k), f"{path}.{k}")]
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            return [p for x, y in zip(a, b, strict=True) for p in paths(x, y, f"{path}[]")]
        return [] if a == b else [path]

    golden, records = load_golden(), collect()
    counts: collections.Counter[str] = collections.Counter()
    for key in golden.keys() | records.keys():
        kind = key.split("|")[0] if "|" in key else re.sub(r"\d+$", "", key)
        for p in paths(golden.get(key), records.get(key)):
            counts[f"{kind} | {p}"] += 1
    return [(n, what) for what, n in counts.most_common(limit)]

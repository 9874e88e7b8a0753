"""examples/paper-grid.yaml measures with Anthropic's model-written evaluations (``inventory: hub``), with
its traits written in the config, and validates offline against a local copy of the hub dataset.

The hub cannot be reached here, so the full check (``load_config``, which loads the inventory) runs in a
fresh interpreter with the hub switched off and ``CONTAGION_HUB_DATASET`` pointing at a local copy laid
out as the dataset is (``persona/<trait>.jsonl``). Its files hold stand-in items (the project's own
persona fixtures, in Anthropic's format): what is checked is the config and the loading path, not the
statements. Whether the traits exist in Anthropic's real persona folder is checked against the files
beside the checkout when they are there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

import contagion
from contagion.experiment.config import ExperimentConfig
from contagion.traits.inventory import DEFAULT_TRAIT_SETS, HUB_DATASET_ENV

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "paper-grid.yaml"
SRC = Path(contagion.__file__).resolve().parents[1]

SCRIPT = """
import json, sys
from pathlib import Path
from contagion.experiment.config import load_config
cfg = load_config(Path(sys.argv[1]))
inv = cfg.assessment.inventory_sample()
print(json.dumps({"size": cfg.size(), "source": inv.source, "traits": inv.traits(), "n": len(inv)}))
"""


def _config() -> dict[str, object]:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _traits() -> list[str]:
    assessment = _config()["assessment"]
    assert isinstance(assessment, dict)
    return list(assessment["traits"])


def _offline_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "CONTAGION_"))}
    env.update(
        HF_HOME=str(tmp_path / "hf-home"),  # an empty cache: nothing downloaded before
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]),
        **extra,
    )
    return env


def test_the_paper_grid_uses_the_hub_with_its_traits_written_out() -> None:
    data = _config()
    cfg = ExperimentConfig.model_validate(data)  # the schema, without loading the inventory
    assert cfg.size() == 5184  # 3 games x 4 compositions x 6 interventions (both placebos) x 2 x 36
    assert cfg.assessment.inventory == "hub"
    traits = _traits()
    assert cfg.assessment.traits == tuple(traits)
    assert {"agreeableness", "machiavellianism", "narcissism", "psychopathy"} <= set(traits)
    polarity = {t: DEFAULT_TRAIT_SETS.polarity(t) for t in traits}
    assert "pro" in polarity.values() and "anti" in polarity.values()  # the pro-social index is defined
    text = EXAMPLE.read_text(encoding="utf-8")
    assert "inventory: /path/to/persona/" in text and HUB_DATASET_ENV in text  # how to use a local copy


def test_the_paper_grid_traits_exist_in_anthropics_persona_folder(anthropic_persona_dir: Path) -> None:
    missing = [t for t in _traits() if not (anthropic_persona_dir / f"{t}.jsonl").is_file()]
    assert missing == []


def test_the_paper_grid_loads_offline_from_a_local_copy_of_the_hub(tmp_path: Path, persona_dir: Path) -> None:
    copy = tmp_path / "model-written-evals"
    (copy / "persona").mkdir(parents=True)
    fixtures = sorted(persona_dir.glob("*.jsonl"))
    for i, trait in enumerate(_traits()):  # stand-in items under each trait's file name
        own = persona_dir / f"{trait}.jsonl"
        source = own if own.is_file() else fixtures[i % len(fixtures)]
        (copy / "persona" / f"{trait}.jsonl").write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(EXAMPLE)],
        env=_offline_env(tmp_path, **{HUB_DATASET_ENV: str(copy)}),
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["size"] == 5184
    assert out["source"] == f"hub:{copy}"
    assert out["traits"] == _traits()
    assert out["n"] == 10 * len(_traits())  # 10 measured items per trait (each stand-in file holds 12)


def test_the_paper_grid_offline_without_a_copy_is_a_clear_user_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "contagion", "run", str(EXAMPLE), "--out", str(tmp_path / "run"), "--no-progress"],
        env=_offline_env(tmp_path), capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    message = proc.stdout + proc.stderr
    assert "Traceback" not in message
    assert "assessment" in message and HUB_DATASET_ENV in message
    assert not (tmp_path / "run").exists()

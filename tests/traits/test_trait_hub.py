"""The hub loader: ``datasets`` reading a local copy of Anthropic/model-written-evals (no network here),
and a clear message when offline with no copy.

Each case runs in a fresh interpreter: ``datasets`` and ``huggingface_hub`` read the offline switches
and cache locations once, at import.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import contagion
from contagion.errors import MissingExtraError, UserError
from contagion.traits import inventory as inventory_module
from contagion.traits.inventory import HUB_DATASET_ENV, load_inventory

SRC = Path(contagion.__file__).resolve().parents[1]

SCRIPT = """
import json, sys
from contagion.errors import UserError
from contagion.traits.inventory import load_inventory
args = json.loads(sys.argv[1])
try:
    inv = load_inventory("hub", traits=args["traits"], hub_dataset=args.get("dataset"))
except UserError as exc:
    print(json.dumps({"error": str(exc)}))
else:
    print(json.dumps({"source": inv.source, "traits": inv.traits(), "n": len(inv),
                      "first": inv.items[0].model_dump(), "last": inv.items[-1].model_dump()}))
"""


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


def _run(tmp_path: Path, args: dict[str, object], **env: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(args)],
        env=_offline_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _hub_layout(root: Path, persona_files: Path, traits: tuple[str, ...]) -> Path:
    """A local copy of the hub dataset's layout, root/persona/<trait>.jsonl, from a folder of persona files."""
    (root / "persona").mkdir(parents=True)
    for trait in traits:
        shutil.copy(persona_files / f"{trait}.jsonl", root / "persona" / f"{trait}.jsonl")
    return root


@pytest.fixture
def hub_copy(tmp_path: Path, persona_dir: Path) -> Path:
    """The project's persona fixtures laid out as a local copy of the hub dataset."""
    traits = ("agreeableness", "machiavellianism", "desire-for-acquiring-power")
    return _hub_layout(tmp_path / "model-written-evals", persona_dir, traits)


def test_hub_loader_reads_a_local_copy_through_datasets(tmp_path: Path, hub_copy: Path, persona_dir: Path) -> None:
    out = _run(tmp_path, {"traits": ["agreeableness", "desire-for-acquiring-power"], "dataset": str(hub_copy)})
    assert "error" not in out, out
    assert out["source"] == f"hub:{hub_copy}"
    assert out["traits"] == ["agreeableness", "desire-for-acquiring-power"]
    assert out["n"] == 24
    direct = load_inventory(persona_dir, traits=["agreeableness", "desire-for-acquiring-power"])
    assert out["first"] == direct.items[0].model_dump()
    assert out["last"] == direct.items[-1].model_dump()


def test_hub_loader_reads_anthropic_files(tmp_path: Path, anthropic_persona_dir: Path) -> None:
    """The real files (when they are beside the checkout) load through datasets as through the directory loader."""
    root = _hub_layout(tmp_path / "model-written-evals", anthropic_persona_dir, ("narcissism",))
    out = _run(tmp_path, {"traits": ["narcissism"], "dataset": str(root)})
    assert "error" not in out, out
    assert out["n"] == 1000
    direct = load_inventory(anthropic_persona_dir, traits=["narcissism"])
    assert out["first"] == direct.items[0].model_dump()
    assert out["last"] == direct.items[-1].model_dump()


def test_hub_local_copy_from_environment_variable(tmp_path: Path, hub_copy: Path) -> None:
    out = _run(tmp_path, {"traits": ["machiavellianism"]}, **{HUB_DATASET_ENV: str(hub_copy)})
    assert out["source"] == f"hub:{hub_copy}"
    assert out["n"] == 12


def test_hub_unknown_trait_in_local_copy(tmp_path: Path, hub_copy: Path) -> None:
    out = _run(tmp_path, {"traits": ["no-such-trait"], "dataset": str(hub_copy)})
    assert "no-such-trait" in str(out["error"]) and "persona/no-such-trait.jsonl" in str(out["error"])


def test_hub_malformed_row_names_file_and_line(tmp_path: Path, hub_copy: Path) -> None:
    path = hub_copy / "persona" / "agreeableness.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()[:5]
    lines[3] = lines[3].replace('" Yes"', '" Perhaps"').replace('" No", "answer_not', '" Perhaps", "answer_not')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = _run(tmp_path, {"traits": ["agreeableness"], "dataset": str(hub_copy)})
    assert "persona/agreeableness.jsonl, line 4" in str(out["error"])
    assert "'Yes' or 'No'" in str(out["error"])


def test_hub_offline_without_a_copy_fails_clearly(tmp_path: Path) -> None:
    out = _run(tmp_path, {"traits": ["agreeableness"]})
    message = str(out["error"])
    assert "Anthropic/model-written-evals" in message
    assert "cannot reach the Hugging Face hub" in message
    assert HUB_DATASET_ENV in message  # names the fix


def test_hub_without_datasets_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(MissingExtraError) as err:
        inventory_module.load_hub(["agreeableness"])
    assert "pip install 'contagion[hub]'" in str(err.value)
    assert isinstance(err.value, UserError)


def test_hub_local_copy_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a directory"):
        load_inventory("hub", traits=["agreeableness"], hub_dataset=tmp_path / "missing")

"""Backend plug-ins (issue 27, item 6): a package adds a kind of backend through the entry-point group
``contagion.backends``. The test writes a small plug-in package with its dist-info (name, version, entry
points) into a directory on the path — how an installed distribution looks to ``importlib.metadata`` —
and uses it from the registry and, in a fresh process, from ``contagion play``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import contagion
from contagion.backends import registry
from contagion.backends.registry import PLUGIN_GROUP, kind_of, resolve, valid_forms
from contagion.errors import BackendSpecError

PLUGIN = '''
"""A tiny contagion backend plug-in: a 'model' that always prefers the first choice and says its text."""
from contagion.backends.base import Backend, Capabilities, ChoiceScore, Completion, ScoreMethod, Scores
from contagion.backends.registry import BackendKind


class Parrot(Backend):
    def __init__(self, text: str) -> None:
        self.spec = f"parrot:{text}"
        self.text = text
        self.capabilities = Capabilities(score_method=ScoreMethod.FIRST_TOKEN)

    async def generate(self, messages, config):
        return Completion(text=f"{self.text}!")

    async def score_choices(self, messages, choices, *, prefix=""):
        lps = [-0.2] + [-2.0] * (len(choices) - 1)
        return Scores(choices=[ChoiceScore(choice=c, logprob=lp) for c, lp in zip(choices, lps)],
                      method=ScoreMethod.FIRST_TOKEN)


def build(rest, params, spec):
    return Parrot(rest)


KIND = BackendKind("parrot", "parrot:TEXT (a test plug-in)", "contagion_parrot:build", local=True)


def broken():
    raise RuntimeError("the plug-in fell over")
'''


def install(where: Path, entry_points: dict[str, str]) -> Path:
    """Write the plug-in package and a dist-info declaring ``entry_points`` into ``where``."""
    (where / "contagion_parrot").mkdir(parents=True)
    (where / "contagion_parrot" / "__init__.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    info = where / "contagion_parrot-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: contagion-parrot\nVersion: 0.1\n", encoding="utf-8")
    lines = [f"[{PLUGIN_GROUP}]", *(f"{k} = {v}" for k, v in entry_points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return where


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = install(tmp_path / "site", {"parrot": "contagion_parrot:KIND", "fragile": "contagion_parrot:broken",
                                        "openai": "contagion_parrot:KIND"})
    monkeypatch.syspath_prepend(str(where))
    yield where
    for name in ("parrot", "fragile"):
        registry._KINDS.pop(name, None)
    sys.modules.pop("contagion_parrot", None)


def test_an_installed_plugin_is_a_backend_kind(plugin: Path) -> None:
    kind = kind_of("parrot:polly")
    assert kind.name == "parrot" and kind.local and kind.language_model
    backend = resolve("parrot:polly")
    assert backend.identity == "parrot:polly" and backend.capabilities.local  # the kind's declared facts
    assert "parrot:TEXT (a test plug-in)" in valid_forms()


def test_broken_plugins_are_named(plugin: Path) -> None:
    with pytest.raises(BackendSpecError, match=r"'fragile'.*contagion-parrot 0\.1.*failed to load.*fell over"):
        kind_of("fragile:x")
    with pytest.raises(BackendSpecError, match="valid forms"):
        kind_of("nothing-installed:x")
    assert kind_of("openai:m@http://h/v1").factory.startswith("contagion.backends")  # built-ins keep their name
    with pytest.raises(BackendSpecError, match="built-in"):
        registry._load_plugin(next(e for e in registry._plugin_entry_points() if e.name == "openai"))


def test_a_plugin_plays_a_game_from_the_command_line(tmp_path: Path) -> None:
    where = install(tmp_path / "site", {"parrot": "contagion_parrot:KIND"})
    src = Path(contagion.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(where)])}
    out = tmp_path / "game.json"
    proc = subprocess.run([sys.executable, "-m", "contagion", "play", "-p", "parrot:polly", "-p",
                           "scripted:always-defect", "--rounds", "2", "--quiet", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads(out.read_text(encoding="utf-8"))
    parrot = record["players"][0]
    assert parrot["backend"] == "parrot:polly"
    assert [a["action"] for a in parrot["actions"]] == ["cooperate", "cooperate"]  # its first choice, scored
    said = [m["content"] for m in parrot["messages"] if m["meta"].get("kind") == "own_talk"]
    assert said == ["polly!", "polly!"]

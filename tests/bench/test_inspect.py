"""The Inspect AI backend and task against llama-cpp-python's own OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from contagion.bench.protocol import load_protocol
from contagion.cli import app
from tests.backends.llama_server import LlamaServer

pytest.importorskip("inspect_ai")
pytestmark = pytest.mark.slow

BUILTIN = Path(__file__).parents[2] / "src" / "contagion" / "data" / "bench-v1.yaml"
PROVIDER = "openai-api/llama/smollm2"
"""Inspect's OpenAI-compatible provider (service ``llama``: its key from LLAMA_API_KEY)."""


@pytest.fixture(scope="module")
def server(llama_server: LlamaServer) -> LlamaServer:
    return llama_server


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_API_KEY", "unused")  # the local server checks none; Inspect wants one set


def play(tmp: Path, spec: str, name: str) -> dict:
    out = tmp / f"{name}.json"
    seats = ["--player", spec, "--player", spec, "--player", f"malicious={spec}"]
    result = CliRunner().invoke(app, ["play", "--game", "prisoners-dilemma", *seats, "--rounds", "2",
                                      "--chat-turns", "1", "--max-tokens", "8", "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text(encoding="utf-8"))


def test_inspect_players_choose_the_actions_of_the_openai_backend(server: LlamaServer, tmp_path: Path) -> None:
    via_inspect = play(tmp_path, f"inspect:{PROVIDER}?base_url={server.base_url}", "inspect")
    direct = play(tmp_path, server.spec(), "openai")
    assert via_inspect["error"] is None and direct["error"] is None
    actions = [[a["action"] for a in p["actions"]] for p in via_inspect["players"]]
    assert actions == [[a["action"] for a in p["actions"]] for p in direct["players"]]
    assert sum(len(a) for a in actions) == 6
    methods = {a["method"] for p in via_inspect["players"] for a in p["actions"]}
    assert methods == {"score:first-token-top-logprobs"}  # the provider gave logprobs; recorded as usual


def test_inspect_eval_of_the_task_writes_one_sample_per_game(server: LlamaServer, tmp_path: Path) -> None:
    from inspect_ai.log import list_eval_logs, read_eval_log

    data = yaml.safe_load(BUILTIN.read_text(encoding="utf-8"))
    data["sizes"]["tiny"] = {"games": ["prisoners-dilemma"], "rounds": 1, "chat_turns": 1, "games_per_cell": 1,
                             "control_games_per_cell": 1, "items": 1, "source_items": 1, "debias": False,
                             "max_tokens": 8, "traits": ["agreeableness", "machiavellianism"]}
    protocol_file = tmp_path / "tiny.yaml"
    protocol_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    trials = load_protocol("tiny", protocol_file).games()
    logs, card_dir = tmp_path / "logs", tmp_path / "card"
    cmd = [sys.executable, "-m", "inspect_ai", "eval", "contagion/contagion_bench", "--model", PROVIDER,
           "--model-base-url", server.base_url, "-T", "size=tiny", "-T", f"protocol_file={protocol_file}",
           "-T", f"out={card_dir}", "--max-samples", "1", "--max-connections", "1", "--log-dir", str(logs),
           "--display", "none"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LLAMA_API_KEY": "unused"},
                          timeout=3000)
    assert done.returncode == 0, done.stderr[-3000:]
    infos = list_eval_logs(str(logs))
    assert len(infos) == 1
    log = read_eval_log(infos[0].name)
    assert log.status == "success"
    assert log.samples is not None and len(log.samples) == trials
    assert all(s.scores and "contagion" in s.scores for s in log.samples)
    metrics = log.results.scores[0].metrics if log.results else {}
    card = json.loads((card_dir / "card.json").read_text(encoding="utf-8"))
    assert card["model"] == f"inspect:{PROVIDER}" and card["backend"] == "inspect"
    for h in card["headlines"]:  # the evaluation's scores are the card's numbers
        if h.get("estimate") is not None:
            assert metrics[h["id"]].value == pytest.approx(h["estimate"])

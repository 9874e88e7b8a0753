"""Shared helpers of the experiment tests: configs on disk, the CLI as a subprocess, record comparison,
and a loopback responder that can play the games."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

import contagion
from contagion.experiment.store import Store
from contagion.testing.loopback import default_responder, default_top_logprobs

SRC = Path(contagion.__file__).resolve().parents[1]

# A small, fast grid on deterministic backends (simulated model + scripted co-player).
SMALL: dict[str, Any] = {
    "name": "small",
    "models": ["sim:planted"],
    "games": ["prisoners-dilemma", "chicken"],
    "compositions": {
        "all-default": ["default", "default", "default"],
        "scripted-defector": ["default", "default", "scripted:always-defect"],
    },
    "interventions": ["none", "sit:k=2,n=2"],
    "rounds": 2,
    "chat_turns": [0, 1],
    "repetitions": 1,
    "assessment": {"items": 2, "bootstrap": 100},
    "generation": {"max_tokens": 20},
}

# Fields that measure time or cost, not outcome: they differ between runs of the same spec.
TIMING_FIELDS = ("wall_seconds", "model_seconds")


def write_config(path: Path, data: dict[str, Any] | None = None, **overrides: Any) -> Path:
    cfg = dict(SMALL if data is None else data)
    cfg.update(overrides)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["COLUMNS"] = "400"  # one error line, unwrapped
    env.update(extra)
    return env


def contagion_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "contagion", *args]


def run_cli(*args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(contagion_cmd(*args), capture_output=True, text=True, env=cli_env(), timeout=timeout,
                          cwd=cwd)


def strip_timing(value: Any) -> Any:
    """A record (as plain JSON data) without the fields that measure time or cost."""
    if isinstance(value, dict):
        return {k: strip_timing(v) for k, v in value.items() if k not in TIMING_FIELDS and k != "cost"}
    if isinstance(value, list):
        return [strip_timing(v) for v in value]
    return value


def comparable_records(run_dir: Path, *, status: str | None = None) -> dict[str, Any]:
    """spec hash → record content without timing, for every stored record (each one decoded)."""
    out: dict[str, Any] = {}
    with Store.open_existing(run_dir) as store:
        for record in store.iter_records(status=status):
            assert record.spec_hash not in out, f"duplicate record {record.spec_hash}"
            out[record.spec_hash] = strip_timing(json.loads(record.model_dump_json()))
    return out


def squash(text: str) -> str:
    """Text without any whitespace (rich wraps long lines wherever it likes)."""
    return re.sub(r"\s+", "", text)


# -- a loopback responder that plays ----------------------------------------------------------------

_ACT = re.compile(r"Reply with one word: '([a-z]+)' or '([a-z]+)'")


def _last_user(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def game_responder(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """Answers action prompts with first-token log-probs over the two action labels (a hashed
    preference), trait questions with the default Yes/No distribution, and chat with text."""
    match = _ACT.search(_last_user(body))
    if match is None:
        return default_responder(body)
    coop, defect = match.groups()
    h = int(hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()[:8], 16) / 2**32
    p = 0.2 + 0.6 * h
    top = sorted(
        [{"token": f" {coop}", "logprob": math.log(p * 0.9)},
         {"token": f" {defect}", "logprob": math.log((1 - p) * 0.9)},
         {"token": " I", "logprob": math.log(0.1)}],
        key=lambda t: -t["logprob"],
    )
    return str(top[0]["token"]), top


__all__ = [
    "SMALL", "SRC", "cli_env", "comparable_records", "contagion_cmd", "default_top_logprobs", "game_responder",
    "run_cli", "squash", "strip_timing", "write_config",
]

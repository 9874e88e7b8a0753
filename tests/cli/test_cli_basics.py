"""The command itself: version, help, and the backend-level bad-input cases (exit 2, one clear line)."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contagion import __version__
from contagion.cli.app import app

runner = CliRunner()
SRC = str(Path(__file__).resolve().parents[2] / "src")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "contagion", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_help_teaches_the_commands_and_specs() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for word in ("demo", "play", "assess", "run", "embedded", "openai:MODEL@BASE_URL", "scripted:always-defect"):
        assert word in result.output
    play_help = runner.invoke(app, ["play", "--help"])
    assert "[PERSONA=]BACKEND_SPEC" in play_help.output


def _assert_clean_failure(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    for needle in needles:
        assert needle in proc.stderr


def test_unknown_backend_spec(tmp_path: Path) -> None:
    out = tmp_path / "g.json"
    proc = run_cli("play", "--player", "gpt-4", "--player", "embedded", "--out", str(out))
    _assert_clean_failure(proc, "unknown backend spec 'gpt-4'", "openai:MODEL@BASE_URL")
    assert not out.exists()


def test_missing_gguf_path(tmp_path: Path) -> None:
    proc = run_cli("play", "--player", f"gguf:{tmp_path}/missing.gguf", "--player", "scripted:always-defect")
    _assert_clean_failure(proc, "missing.gguf does not exist")


def test_unreachable_server(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "g.json"
    proc = run_cli("play", "--player", f"openai:m@http://127.0.0.1:{port}/v1", "--player", "scripted:always-defect",
                   "--rounds", "1", "--out", str(out))
    _assert_clean_failure(proc, f"127.0.0.1:{port}")
    assert not out.exists()


def test_missing_optional_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def fake(name: str, *args: object, **kwargs: object) -> object:
        if name.split(".")[0] in ("torch", "transformers"):
            return None
        return real(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    from contagion.backends import registry

    registry._cache.pop("hf:embedded", None)
    result = runner.invoke(app, ["play", "--player", "hf:embedded", "--player", "scripted:always-defect"])
    assert result.exit_code == 2
    assert "pip install 'contagion[whitebox]'" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)

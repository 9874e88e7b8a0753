"""The transcript viewer's file and server, without a browser: data complete, escaped, served on loopback."""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import contagion.cli  # noqa: F401  (registers every command)
from contagion.cli.app import app
from contagion.viewer import ViewerServer, write_viewer
from contagion.viewer.page import json_for_html
from tests.analysis.sim_runs import PAYLOAD


def _blocks(text: str) -> dict[str, object]:
    found = dict(re.findall(r'<script type="application/json" id="([a-z-]+)">(.*?)</script>', text, flags=re.S))
    return {k: json.loads(v) for k, v in found.items()}


def test_json_for_html_cannot_close_its_block() -> None:
    text = json_for_html({"a": "</script><script>alert(1)</script> & <!-- \u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text)["a"].startswith("</script>")


def test_viewer_file_holds_every_game(sim_run_dir: Path, tmp_path: Path) -> None:
    path = write_viewer(sim_run_dir, tmp_path / "v.html")
    data = _blocks(path.read_text(encoding="utf-8"))
    index, games = data["index-data"], data["games-data"]
    assert isinstance(index, dict) and isinstance(games, dict)
    assert len(index["games"]) == 54 and len(games) == 54 and not index["lazy"]
    one = next(g for g in games.values() if g["composition"] == "one-malicious" and g["intervention"] != "none")
    assert {p["seat"] for p in one["detail"]} == {"default", "malicious"}
    measured = [p for p in one["detail"] if p["traits"]]
    assert len(measured) == 2 and measured[0]["traits"][-1]["trait"] == "prosocial-index"
    assert any(m["kind"] == "injection" for p in one["detail"] for m in p["messages"])
    assert one["rounds"] and len(one["rounds"][0]["actions"]) == 3
    assert {g["outcome"] for g in index["games"]} <= {"tie", "won by default", "won by malicious",
                                                      "won by scripted:always-defect"}


def test_payload_is_data_never_markup(payload_run_dir: tuple[Path, str], tmp_path: Path) -> None:
    run_dir, poisoned = payload_run_dir
    text = write_viewer(run_dir, tmp_path / "v.html").read_text(encoding="utf-8")
    assert PAYLOAD not in text and "<img" not in text and "window.pwned = 1</script>" not in text
    assert text.count("<script") == 3  # two data blocks and the viewer's own script
    games = _blocks(text)["games-data"]
    assert isinstance(games, dict)
    texts = [m["text"] for p in games[poisoned]["detail"] for m in p["messages"]]
    assert any(PAYLOAD in t for t in texts)  # the data round-trips exactly
    failed = [g for g in games.values() if g["status"] == "failed"]
    assert len(failed) == 1 and PAYLOAD in failed[0]["error_full"]


def test_content_security_policy_allows_only_the_viewer_script(sim_run_dir: Path, tmp_path: Path) -> None:
    text = write_viewer(sim_run_dir, tmp_path / "v.html").read_text(encoding="utf-8")
    csp = re.search(r'Content-Security-Policy" content="([^"]+)"', text)
    assert csp is not None and "script-src 'sha256-" in csp.group(1) and "unsafe-inline" not in csp.group(1).split(
        "script-src")[1]


@pytest.fixture
def server(payload_run_dir: tuple[Path, str]) -> Iterator[ViewerServer]:
    srv = ViewerServer(payload_run_dir[0], 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def test_server_serves_the_list_and_games_on_demand(server: ViewerServer,
                                                    payload_run_dir: tuple[Path, str]) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(server.url) as resp:
        page = resp.read().decode()
    data = _blocks(page)
    assert "games-data" not in data
    index = data["index-data"]
    assert isinstance(index, dict) and index["lazy"] and len(index["games"]) == 55
    poisoned = payload_run_dir[1]
    with urllib.request.urlopen(f"{server.url}game/{poisoned}.json") as resp:
        assert resp.headers["Content-Type"].startswith("application/json")
        game = json.loads(resp.read())
    assert game["id"] == poisoned
    for bad in ("game/nope.json", "game/../store.sqlite.json", "store.sqlite"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url + bad)
        assert err.value.code == 404


def test_view_command(sim_run_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["view", str(sim_run_dir), "--out", str(tmp_path / "x.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x.html").exists()
    missing = CliRunner().invoke(app, ["view", str(tmp_path / "missing")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    both = CliRunner().invoke(app, ["view", str(sim_run_dir), "--serve", "--out", "x.html"])
    assert both.exit_code == 2 and "not both" in both.output


def test_reasoning_goes_to_the_viewer_with_its_own_message_only() -> None:
    """Issue 27: the viewer shows a message's reasoning folded under it (the page's <details>); a message
    without reasoning carries no such key."""
    from contagion.messages import Message
    from contagion.viewer.data import _message

    said = _message(Message(role="assistant", content="swerve", reasoning="they went straight twice",
                            meta={"kind": "own_action", "round": 2}))
    heard = _message(Message(role="user", content="Blake: hi", meta={"kind": "talk", "speaker": "Blake"}))
    assert said["reasoning"] == "they went straight twice" and said["text"] == "swerve"
    assert "reasoning" not in heard
    script = (Path(__file__).resolve().parents[2] / "src/contagion/viewer/templates/viewer.js").read_text()
    assert 'el("details", {class: "reasoning"}' in script and "m.reasoning" in script

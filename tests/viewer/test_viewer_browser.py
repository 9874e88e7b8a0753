"""The transcript viewer in a real headless browser (Playwright + Debian's chromium)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from contagion.viewer import ViewerServer, write_viewer
from tests.analysis.sim_runs import PAYLOAD, PageWatch


@pytest.fixture(scope="module")
def viewer_file(payload_run_dir: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_viewer(payload_run_dir[0], tmp_path_factory.mktemp("viewer") / "viewer.html")


@pytest.fixture
def watch(browser: Any) -> Any:
    w = PageWatch(browser)
    yield w
    w.close()


def _items(page: Any) -> int:
    return int(page.locator("#game-list li").count())


def test_loads_without_errors_and_filters_shrink_the_list(watch: Any, viewer_file: Path) -> None:
    page = watch.page
    page.goto(viewer_file.as_uri())
    page.wait_for_selector("#game-list li")
    total = _items(page)
    assert total == 55
    assert page.locator("#count").inner_text() == "55 of 55 games"
    page.select_option("#f-composition", "one-malicious")
    one = _items(page)
    assert 0 < one < total
    page.select_option("#f-intervention", "none")
    assert 0 < _items(page) < one
    page.click("#reset")
    assert _items(page) == total
    page.select_option("#f-outcome", "failed")
    assert _items(page) == 1
    page.locator("#game-list li").first.click()
    page.wait_for_selector("#detail .error")
    assert "connection" not in page.locator("#detail .error").inner_text()  # the failure is this game's own
    assert "RuntimeError: model said <script>" in page.locator("#detail .error").inner_text()
    assert page.evaluate("window.pwned") is None
    assert watch.errors == []


def test_a_malicious_transcript_is_shown_never_run(watch: Any, viewer_file: Path,
                                                   payload_run_dir: tuple[Path, str]) -> None:
    page = watch.page
    poisoned = payload_run_dir[1]
    page.goto(f"{viewer_file.as_uri()}#game={poisoned}")
    page.wait_for_selector("#detail .msgs")
    # the default player's view holds the malicious player's chat as text
    bodies = page.locator("#detail .msg.talk .body").all_inner_texts()
    assert any(PAYLOAD in b for b in bodies), bodies[:3]
    assert page.get_by_text("<b>bold?</b>", exact=False).count() >= 1
    # nothing in it ran or became markup
    assert page.evaluate("window.pwned") is None
    assert page.locator("#detail img, #detail b, #detail a[href^='javascript']").count() == 0
    assert page.evaluate("document.scripts.length") == 3  # the two JSON blocks and the viewer itself
    # the malicious player's own tab shows what it wrote
    page.get_by_role("tab", name="malicious", exact=False).click()
    own = page.locator("#detail .msg.own_talk .body").all_inner_texts()
    assert PAYLOAD in own
    assert page.evaluate("window.pwned") is None
    assert watch.errors == []


def test_game_detail_shows_actions_injections_and_trait_changes(watch: Any, viewer_file: Path) -> None:
    page = watch.page
    page.goto(viewer_file.as_uri())
    page.select_option("#f-composition", "one-malicious")
    page.select_option("#f-intervention", "sit:k=1,n=2")
    page.select_option("#f-chat", "1")
    page.locator("#game-list li").first.click()
    page.wait_for_selector("#detail table.scoreboard")
    assert page.locator("#detail table.scoreboard tbody tr").count() == 4  # three rounds and the totals
    assert page.locator("#detail .msg.injection").count() >= 1
    assert page.locator("#detail .msg.injection .badge").first.inner_text() == "steering message injected"
    trait_rows = page.locator("#detail .traits tr")
    assert trait_rows.count() >= 2 * 10
    assert "#game=" in page.evaluate("location.hash")
    assert watch.errors == []


def test_served_viewer_loads_games_on_demand(watch: Any, payload_run_dir: tuple[Path, str]) -> None:
    server = ViewerServer(payload_run_dir[0], 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        page = watch.page
        page.goto(f"{server.url}#game={payload_run_dir[1]}")
        page.wait_for_selector("#detail .msgs")
        assert any(PAYLOAD in b for b in page.locator("#detail .msg.talk .body").all_inner_texts())
        assert page.evaluate("window.pwned") is None
        page.select_option("#f-game", "prisoners-dilemma")
        assert _items(page) == 55
        assert watch.errors == []
    finally:
        server.shutdown()
        server.server_close()

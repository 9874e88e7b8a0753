"""Small runs on the simulated models, made through the real Runner, shared by the analysis and viewer tests.

Each builder writes under a session directory once and returns the run directory afterwards.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from contagion.experiment.config import parse_config
from contagion.experiment.record import GameRecord
from contagion.experiment.runner import Runner
from contagion.experiment.store import Store
from contagion.experiment.trial import failed_record

SIM_CONFIG: dict[str, Any] = {
    "name": "sim test run",
    "models": ["sim:planted"],
    "games": ["prisoners-dilemma"],
    "interventions": ["none", "repeat-system:k=2", "sit:k=1,n=2"],
    "chat_turns": [0, 1],
    "rounds": 3,
    "repetitions": 3,
    "assessment": {"items": 4},
    # argmax actions, fixed seats and option order: the no-chat repetitions replay one game (the clustering tests)
    "action_mode": "auto",
    "seat_order": "fixed",
    "option_order": "cooperate-first",
}
"""54 games: all-default, one-malicious and scripted-defector groups, three interventions, chat and no chat."""

PAYLOAD = ('<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
           '<b>bold?</b> & <a href="javascript:window.pwned=3">link</a> </script> end')
"""A malicious agent's message: markup that must be shown as text and never run."""


def run_grid(run_dir: Path, config: dict[str, Any]) -> Path:
    Runner(parse_config(config), run_dir, progress=False, console=Console(quiet=True)).run()
    return run_dir


def sim_run(base: Path) -> Path:
    run_dir = base / "sim-run"
    if not (run_dir / "store.sqlite").exists():
        run_grid(run_dir, SIM_CONFIG)
    return run_dir


def _poison(record: GameRecord) -> GameRecord:
    """The malicious player's chat (as every player saw it) replaced by the payload."""
    record = record.model_copy(deep=True)
    malicious = next(p for p in record.players if p.persona == "malicious")
    for p in record.players:
        p.messages = [
            m.model_copy(update={"content": f"{malicious.name}: {PAYLOAD}"})
            if m.meta.get("kind") == "talk" and m.meta.get("speaker") == malicious.name
            else m.model_copy(update={"content": PAYLOAD}) if p is malicious and m.meta.get("kind") == "own_talk"
            else m
            for m in p.messages
        ]
    for r in record.rounds:
        r.talk = [(s, PAYLOAD if s == malicious.name else t) for s, t in r.talk]
    return record


def payload_run(base: Path) -> tuple[Path, str]:
    """A copy of the sim run where one one-malicious game carries the payload, plus one failed game.

    Returns the run directory and the poisoned game's id.
    """
    src = sim_run(base)
    run_dir = base / "payload-run"
    marker = base / "payload-run.id"
    if marker.exists():
        return run_dir, marker.read_text()
    poisoned = ""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    with Store.open_existing(src) as source, Store.open(run_dir) as store:
        store.set_config(source.config() or {})
        for record in source.iter_records():
            if not poisoned and record.labels.get("composition") == "one-malicious" and record.spec.game.chat_turns:
                record = _poison(record)
                poisoned = record.spec_hash
            store.put(record)
        spec = record.spec.model_copy(update={"game": record.spec.game.model_copy(update={"seed": 999})})
        store.put(failed_record(spec, {**record.labels, "rep": 999}, f"RuntimeError: model said {PAYLOAD}", 0.1))
    marker.write_text(poisoned)
    return run_dir, poisoned


def failed_only_run(base: Path) -> Path:
    """A run whose every game failed."""
    run_dir = base / "failed-run"
    if run_dir.exists():
        return run_dir
    cfg = parse_config(SIM_CONFIG)
    with Store.open(run_dir) as store:
        store.set_config(cfg.model_dump(mode="json"))
        for i, (spec, labels) in enumerate(cfg.expand()):
            if i >= 3:
                break
            store.put(failed_record(spec, labels, "BackendError: connection refused", 0.01))
    return run_dir


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def browser_fixture() -> Any:
    """A generator for a session fixture: Debian's chromium driven by Playwright (skips when absent)."""
    import pytest

    playwright_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class PageWatch:
    """A page with every console error and uncaught exception collected."""

    def __init__(self, browser: Any) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def close(self) -> None:
        self.page.close()

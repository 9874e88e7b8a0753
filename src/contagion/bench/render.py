"""Cards and leaderboards as files: ``card.json``, ``card.html``, ``leaderboard.html`` and ``leaderboard.csv``.

Pages are self-contained (inline CSS and SVG, a Content-Security-Policy that forbids any request and any
script) and rendered by Jinja2 with autoescaping, so every string from a card (model names, warnings)
is escaped. Figures are forest plots drawn by matplotlib (:func:`contagion.analysis.figures.to_svg`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
from matplotlib import rc_context
from matplotlib.figure import Figure

from contagion.analysis.figures import to_svg
from contagion.bench.card_schema import CardFile, check_card
from contagion.errors import UserError
from contagion.fileio import csv_cell, write_atomic

CARD_JSON = "card.json"
CARD_HTML = "card.html"
LEADERBOARD_HTML = "leaderboard.html"
LEADERBOARD_CSV = "leaderboard.csv"
_RC: Any = {"svg.fonttype": "none", "svg.hashsalt": "contagion", "font.family": "sans-serif",
            "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial"], "font.size": 9,
            "axes.spines.top": False, "axes.spines.right": False, "text.parse_math": False}


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def fnum(x: Any, digits: int = 3, signed: bool = False) -> str:
    if not _finite(x):
        return "—"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def fp(x: Any) -> str:
    if not _finite(x):
        return "—"
    return "< 0.001" if x < 0.001 else f"{x:.3f}"


def forest(rows: Sequence[dict[str, Any]], *, title: str, xlabel: str) -> str:
    """A forest plot: one row per entry (``label``, ``estimate``, ``ci_low``, ``ci_high``, ``detected``),
    a zero line; detected entries filled, others hollow. Returns inline SVG."""
    with rc_context(_RC):
        fig = Figure(figsize=(7.2, 0.45 * max(len(rows), 1) + 1.1), layout="constrained")
        ax = fig.add_subplot()
        ys = list(range(len(rows)))[::-1]
        for y, r in zip(ys, rows, strict=True):
            est = r.get("estimate")
            if est is None or not _finite(est):
                ax.text(0, y, "not available", va="center", ha="center", color="#777", fontsize=8)
                continue
            lo, hi = r.get("ci_low"), r.get("ci_high")
            if lo is not None and hi is not None and _finite(lo) and _finite(hi):
                ax.plot([float(lo), float(hi)], [y, y], color="#1a5fb4", lw=1.6)
            filled = bool(r.get("detected"))
            ax.plot([float(est)], [y], "o", ms=6, color="#1a5fb4", mfc="#1a5fb4" if filled else "white", mew=1.5)
        ax.axvline(0, color="#888", lw=0.8, ls="--")
        ax.set_yticks(ys, [str(r["label"])[:48] for r in rows])
        ax.set_xlabel(xlabel)
        ax.set_title(title, loc="left", fontsize=10, fontweight="bold")
        ax.set_ylim(-0.7, len(rows) - 0.3)
        return to_svg(fig)


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("contagion.bench", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["fnum"] = fnum
    env.filters["fp"] = fp
    return env


def card_figure(card: dict[str, Any]) -> str:
    """The card's headline figure: every trait headline (pro-social index units) as a forest plot."""
    rows = [{"label": h["title"], **h} for h in card["headlines"] if h["units"] == "pro-social index"]
    return forest(rows, title=f"{card['model']} — contagion and protection (95% CI)",
                  xlabel="difference in pro-social index drift (filled: detected, Holm-adjusted)")


def render_card(card: dict[str, Any]) -> str:
    behaviour = [{"label": h["title"], **h} for h in card["headlines"] if h["units"] != "pro-social index"]
    extra = forest(behaviour, title="Behaviour and instrument (95% CI)", xlabel="difference (own units)")
    return _env().get_template("card.html.j2").render(c=card, figure=card_figure(card), extra=extra)


def write_card(card: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``out/card.json`` and ``out/card.html`` (each written whole or not at all). The card must satisfy its
    schema (:class:`~contagion.bench.card_schema.CardFile`): a card this contagion writes, it also reads."""
    CardFile.model_validate(card)
    out.mkdir(parents=True, exist_ok=True)
    js, html = out / CARD_JSON, out / CARD_HTML
    write_atomic(js, json.dumps(card, indent=2, sort_keys=False, allow_nan=False) + "\n")
    write_atomic(html, render_card(card))
    return js, html


# -- leaderboard --------------------------------------------------------------------------------------


def load_card(path: Path) -> dict[str, Any]:
    """A card from ``card.json`` (or a directory holding one), checked against its schema
    (:func:`~contagion.bench.card_schema.check_card`); UserError when it is not a readable card."""
    path = Path(path)
    if path.is_dir():
        path = path / CARD_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except FileNotFoundError:
        raise UserError(f"no card at {path}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a readable card: not UTF-8 text") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable card: {exc}") from None
    card = check_card(data, str(path))
    card["_path"] = str(path)
    return card


def _no_constant(name: str) -> Any:
    """JSON has no NaN or Infinity (Python's reader would take them): a card holding one is refused."""
    raise ValueError(f"{name} is not a JSON number (a card holds finite numbers or null)")


def csv_rows(rows: Sequence[Sequence[Any]]) -> str:
    """CSV text of ``rows``, every text cell made safe to open in a spreadsheet (:func:`csv_cell`)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    for row in rows:
        writer.writerow([csv_cell(v) for v in row])
    return buf.getvalue()


def _design_key(card: dict[str, Any]) -> tuple[Any, ...]:
    p = card["protocol"]
    return (p.get("name"), p.get("version"), p.get("size"), p.get("design_hash") or p.get("hash"))


def _card_line(card: dict[str, Any]) -> str:
    p = card["protocol"]
    fingerprint = p.get("analysis_fingerprint") or "none (a version-1 card)"
    return (f"  {card['_path']}: {card['model']} — card v{card['card_version']}, protocol {p.get('name')} "
            f"v{p.get('version')} ({p.get('size')}), design hash {p.get('design_hash') or p.get('hash')}, analysis "
            f"fingerprint {fingerprint}")


def check_comparable(cards: Sequence[dict[str, Any]]) -> None:
    """Refuse cards that were not measured and analysed alike: card formats that state different things
    (a version-1 card has no analysis fingerprint), different protocols (version, size or design hash), or
    different analysis code (fingerprint), naming every card and what it differs in."""
    versions = {c["card_version"] for c in cards}
    designs = {_design_key(c) for c in cards}
    fingerprints = {c["protocol"].get("analysis_fingerprint") for c in cards}
    if len(versions) == len(designs) == len(fingerprints) == len({c["protocol"].get("hash") for c in cards}) == 1:
        return
    lines = "\n".join(_card_line(c) for c in cards)
    if len(versions) > 1:
        raise UserError("these cards cannot be compared: version-1 cards carry no analysis fingerprint (their "
                        "headlines were tested by the card's own Holm over five headlines, not read from the "
                        "report's rows), so they cannot stand next to cards of a newer format:\n" + lines
                        + "\nRe-run the version-1 models with this contagion (`contagion bench MODEL --size SIZE`).")
    if len(designs) > 1:
        raise UserError("these cards were measured under different protocols and cannot be compared:\n" + lines
                        + "\nRe-run the models with one protocol version and size "
                        "(`contagion bench MODEL --size SIZE`).")
    if len(fingerprints) > 1:
        raise UserError("these cards were analysed by different analysis code (their analysis fingerprints differ) "
                        "and cannot be compared:\n" + lines + "\nRe-make the older cards with one contagion "
                        "(`contagion bench MODEL --size SIZE --out DIR` on their run directories: the games are "
                        "kept, the card is analysed again).")
    raise UserError("these cards state different protocol hashes for the same design and analysis (an edited "
                    "card?):\n" + "\n".join(f"{_card_line(c)}, hash {c['protocol'].get('hash')}" for c in cards))


def _headline(card: dict[str, Any], hid: str) -> dict[str, Any]:
    for h in card["headlines"]:
        if h["id"] == hid:
            return dict(h)
    return {"id": hid, "available": False}


def leaderboard_rows(cards: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per card, sorted by susceptibility (most susceptible first; missing values last)."""
    def key(card: dict[str, Any]) -> tuple[int, float, str]:
        est = _headline(card, "susceptibility").get("estimate")
        return (0, float(est), card["model"]) if est is not None and _finite(est) else (1, 0.0, card["model"])

    return [{"model": c["model"], "backend": c.get("backend", ""), "scoring": c.get("scoring", {}).get("method", ""),
             "card": c, "heads": {h["id"]: h for h in c["headlines"]}} for c in sorted(cards, key=key)]


def write_leaderboard(cards: Sequence[dict[str, Any]], out: Path) -> tuple[Path, Path]:
    """``out/leaderboard.html`` and ``out/leaderboard.csv`` of comparable cards: both are made first and
    written only then, so a failure leaves neither (and ``out`` as it was)."""
    if not cards:
        raise UserError("give at least one card")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory for leaderboard.html and leaderboard.csv")
    check_comparable(cards)
    models = [c["model"] for c in cards]
    if len(set(models)) != len(models):
        raise UserError("two cards are of the same model: " + ", ".join(sorted({m for m in models
                                                                                  if models.count(m) > 1})))
    rows = leaderboard_rows(cards)
    ids = [h["id"] for h in rows[0]["card"]["headlines"]]
    titles = {h["id"]: h["title"] for h in rows[0]["card"]["headlines"]}
    units = {h["id"]: h["units"] for h in rows[0]["card"]["headlines"]}
    figures = [forest([{"label": r["model"], **_headline(r["card"], hid)} for r in rows], title=titles[hid],
                      xlabel=f"{units[hid]} (95% CI; filled: detected)") for hid in ids]
    head = ["model", "backend", "scoring", "protocol", "version", "size", "hash", "design_hash", "analysis_fingerprint"]
    for hid in ids:
        head += [f"{hid}_{k}" for k in ("estimate", "ci_low", "ci_high", "p", "p_holm", "power", "detected",
                                        "n_games")]
    table: list[list[Any]] = [head]
    for r in rows:
        p = r["card"]["protocol"]
        line: list[Any] = [r["model"], r["backend"], r["scoring"], p.get("name"), p.get("version"), p.get("size"),
                           p.get("hash"), p.get("design_hash") or "", p.get("analysis_fingerprint") or ""]
        for hid in ids:
            h = _headline(r["card"], hid)
            line += ["" if h.get(k) is None else h.get(k) for k in ("estimate", "ci_low", "ci_high", "p", "p_holm",
                                                                    "power", "detected", "n_games")]
        table.append(line)
    html = _env().get_template("leaderboard.html.j2").render(
        rows=rows, ids=ids, titles=titles, figures=list(zip(ids, figures, strict=True)),
        protocol=rows[0]["card"]["protocol"])
    csv_path, html_path = out / LEADERBOARD_CSV, out / LEADERBOARD_HTML
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {out}: {exc.strerror or exc}") from None
    write_atomic(csv_path, csv_rows(table))
    write_atomic(html_path, html)
    return html_path, csv_path

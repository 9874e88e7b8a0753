"""What the transcript viewer shows, as plain JSON-ready dicts built from game records.

:func:`game_summary` is one line of the game list (conditions, outcome, scores); :func:`game_detail`
is everything about one game: each player's conversation (every message it saw and wrote, with
its kind), actions, payoffs, injected steering messages and trait changes. Texts are passed through
as they are: escaping is the page's job (it renders with ``textContent`` only).
"""

from __future__ import annotations

from typing import Any

from contagion.analysis.tables import PROSOCIAL, composition_kind, paired_index, paired_trait_means
from contagion.experiment.record import GameRecord
from contagion.games.record import PlayerRecord

NOTABLE_DRIFT = 0.05
"""A trait change at least this large (in probability of the trait-matching answer) is highlighted."""


def _seat(p: PlayerRecord) -> str:
    return p.persona if p.language_model else p.backend


def outcome(record: GameRecord) -> str:
    """``failed``, ``tie`` or ``won by <persona>`` (a scripted player is named by its strategy)."""
    if record.error:
        return "failed"
    if not record.players:
        return "no players"
    best = max(p.total for p in record.players)
    top = [p for p in record.players if p.total == best]
    if len(top) > 1:
        return "tie"
    return f"won by {_seat(top[0])}"


def trait_changes(p: PlayerRecord) -> list[dict[str, Any]]:
    """Per trait (and the pro-social index, last): pre, post, change, and whether it is toward anti-social."""
    if not (p.pre_profile and p.post_profile):
        return []
    means = paired_trait_means(p.pre_profile, p.post_profile)
    rows: list[dict[str, Any]] = []
    for trait, (polarity, pre, post, n) in means.items():
        change = post - pre
        anti = (polarity == "anti" and change > 0) or (polarity == "pro" and change < 0)
        rows.append({"trait": trait, "polarity": polarity, "pre": round(pre, 4), "post": round(post, 4),
                     "change": round(change, 4), "items": n, "toward": "anti" if anti else "pro",
                     "notable": abs(change) >= NOTABLE_DRIFT and polarity != "neutral"})
    pre_i, post_i = paired_index(means, 1), paired_index(means, 2)
    if pre_i is not None and post_i is not None:
        change = post_i - pre_i
        rows.append({"trait": PROSOCIAL, "polarity": "index", "pre": round(pre_i, 4), "post": round(post_i, 4),
                     "change": round(change, 4), "items": sum(v[3] for v in means.values()),
                     "toward": "anti" if change < 0 else "pro", "notable": abs(change) >= NOTABLE_DRIFT})
    return rows


def _index_drift(record: GameRecord) -> float | None:
    values = []
    for p in record.players:
        rows = trait_changes(p)
        values += [r["change"] for r in rows if r["trait"] == PROSOCIAL]
    return round(sum(values) / len(values), 4) if values else None


def game_summary(record: GameRecord) -> dict[str, Any]:
    """One entry of the game list."""
    labels = record.labels
    spec = record.spec
    players = record.players or []
    return {
        "id": record.spec_hash,
        "game": str(labels.get("game", spec.game.game)),
        "composition": str(labels.get("composition", "")),
        "kind": composition_kind(players) if players else "",
        "intervention": str(labels.get("intervention", spec.intervention.label())),
        "chat": int(labels.get("chat_turns", spec.game.chat_turns)),
        "model": str(labels.get("model", "")),
        "rep": int(labels.get("rep", 0)),
        "seed": spec.game.seed,
        "status": "failed" if record.error else "ok",
        "outcome": outcome(record),
        "error": (record.error or "").splitlines()[0][:200] if record.error else "",
        "players": [p.name for p in players],
        "totals": [p.total for p in players],
        "injections": sum(len(p.injections) for p in players),
        "drift": _index_drift(record),
    }


def _message(m: Any) -> dict[str, Any]:
    meta = m.meta or {}
    out: dict[str, Any] = {"role": m.role, "kind": str(meta.get("kind", "")), "text": m.content}
    if m.name:
        out["name"] = m.name
    if getattr(m, "reasoning", None):
        out["reasoning"] = m.reasoning  # the speaker's own: shown folded, under its own message only
    for key in ("round", "intervention", "speaker", "own"):
        if key in meta:
            out[key] = meta[key]
    return out


def game_detail(record: GameRecord) -> dict[str, Any]:
    """Everything the viewer shows about one game."""
    spec = record.spec
    players = []
    for p in record.players:
        players.append({
            "name": p.name, "persona": p.persona, "backend": p.backend, "focal": p.focal, "total": p.total,
            "seat": _seat(p),
            "actions": [{"round": a.round, "action": a.action, "label": a.label, "method": a.method,
                         "attempts": a.attempts, "raw": a.raw} for a in p.actions],
            "payoffs": p.payoffs,
            "injections": [{"round": i.round, "phase": i.phase, "intervention": i.intervention, "reason": i.reason,
                            "text": i.text} for i in p.injections],
            "traits": trait_changes(p),
            "messages": [_message(m) for m in p.messages],
            "tokens": p.prompt_tokens + p.completion_tokens,
        })
    return {
        **game_summary(record),
        "rounds_planned": spec.game.rounds,
        "intervention_params": spec.intervention.params,
        "error_full": record.error or "",
        "wall_seconds": record.wall_seconds,
        "version": record.contagion_version,
        "game_title": str(record.game.get("title", spec.game.game)) if record.game else spec.game.game,
        "rounds": [{"round": r.round, "actions": list(r.actions), "payoffs": r.payoffs,
                    "talk": [[s, t] for s, t in r.talk]} for r in record.rounds],
        "detail": players,
    }

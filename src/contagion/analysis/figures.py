"""The report's figures, drawn with matplotlib and returned as inline SVG text (no files, no network);
and the PNG plot that ``contagion attention`` writes beside its table.

Text stays text in the SVG (``svg.fonttype = none``), so figures are small, searchable and sharp;
matplotlib escapes it as XML. Figures are deterministic: no date in the metadata, fixed element ids.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
_RC: Any = {
    "svg.fonttype": "none", "svg.hashsalt": "contagion", "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"], "font.size": 9,
    "axes.spines.top": False, "axes.spines.right": False, "axes.titlesize": 10, "axes.titleweight": "bold",
    "legend.frameon": False, "legend.fontsize": 8, "text.parse_math": False,
}


def to_svg(fig: Figure) -> str:
    """The figure as an ``<svg>`` element (XML prolog and DOCTYPE removed)."""
    buf = io.StringIO()
    with rc_context(_RC):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    # the RDF metadata block names external vocabularies; the report needs none of it
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.S)
    return _prefix_ids(text)


def _prefix_ids(svg: str) -> str:
    """Make element ids unique to this figure, so several inline SVGs in one page never share one."""
    prefix = "f" + hashlib.blake2b(svg.encode(), digest_size=4).hexdigest()
    ids = set(re.findall(r'\bid="([^"]+)"', svg))
    if not ids:
        return svg

    def swap(match: re.Match[str]) -> str:
        name = match.group(2)
        return f"{match.group(1)}{prefix}-{name}{match.group(3)}" if name in ids else match.group(0)

    svg = re.sub(r'(\bid=")([^"]+)(")', swap, svg)
    svg = re.sub(r"(url\(#)([^)]+)(\))", swap, svg)
    return re.sub(r'(href="#)([^"]+)(")', swap, svg)


def _figure(width: float, height: float) -> Figure:
    with rc_context(_RC):
        return Figure(figsize=(width, height), layout="constrained")


def _short(label: str, limit: int = 28) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def points_with_ci(data: pd.DataFrame, *, x: str, series: str, title: str, ylabel: str,
                   xlabel: str = "") -> str:
    """Estimates with CI bars: one group per ``x`` value, one colour per ``series`` value (dodged).

    ``data`` has columns ``x``, ``series``, ``estimate``, ``ci_low``, ``ci_high`` and ``warning``;
    points from cells with a warning (too few games) are drawn hollow.
    """
    with rc_context(_RC):
        xs = list(dict.fromkeys(data[x].astype(str)))
        ss = list(dict.fromkeys(data[series].astype(str)))
        fig = _figure(max(5.5, 1.1 * len(xs) * max(1, len(ss)) ** 0.5 + 2.5), 3.4)
        ax = fig.add_subplot()
        width = 0.8 / max(1, len(ss))
        for j, s in enumerate(ss):
            sub = data[data[series].astype(str) == s]
            pos = [xs.index(v) - 0.4 + width * (j + 0.5) for v in sub[x].astype(str)]
            est = sub["estimate"].to_numpy(dtype=float)
            low = sub["ci_low"].to_numpy(dtype=float)
            high = sub["ci_high"].to_numpy(dtype=float)
            err = np.vstack([np.where(np.isfinite(low), est - low, 0), np.where(np.isfinite(high), high - est, 0)])
            colour = PALETTE[j % len(PALETTE)]
            ax.errorbar(pos, est, yerr=np.abs(err), fmt="none", ecolor=colour, elinewidth=1.4, capsize=3)
            weak = sub["warning"].astype(str).str.len().to_numpy() > 0
            if (~weak).any():
                ax.scatter(np.asarray(pos)[~weak], est[~weak], color=colour, s=30, zorder=3, label=_short(s))
            if weak.any():
                ax.scatter(np.asarray(pos)[weak], est[weak], facecolor="white", edgecolor=colour, s=30, zorder=3,
                           label=None if (~weak).any() else _short(s))
        ax.axhline(0, color="#444", linewidth=0.8)
        ax.set_xticks(range(len(xs)), [_short(v, 22) for v in xs], rotation=0 if len(xs) <= 4 else 20,
                      ha="center" if len(xs) <= 4 else "right")
        ax.set_xlim(-0.6, len(xs) - 0.4)
        ax.set_ylabel(ylabel)
        if xlabel:
            ax.set_xlabel(xlabel)
        ax.set_title(title, loc="left")
        ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
        if len(ss) > 1:
            ax.legend(title=series.replace("_", " "), loc="center left", bbox_to_anchor=(1.0, 0.5))
        return to_svg(fig)


def cooperation_lines(data: pd.DataFrame, *, panel: str = "game", series: str = "composition",
                      title: str = "Cooperation over rounds") -> str:
    """Cooperation rate per round: one panel per ``panel`` value, one line per ``series`` value."""
    with rc_context(_RC):
        panels = list(dict.fromkeys(data[panel].astype(str))) if panel in data else ["all"]
        ss = list(dict.fromkeys(data[series].astype(str)))
        fig = _figure(min(11.0, 3.2 * len(panels) + 1.8), 3.0)
        axes: Sequence[Axes] = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
        for ax, p in zip(axes, panels, strict=True):
            sub = data[data[panel].astype(str) == p] if panel in data else data
            for j, s in enumerate(ss):
                line = sub[sub[series].astype(str) == s].sort_values("round")
                if line.empty:
                    continue
                ax.plot(line["round"], line["rate"], marker="o", markersize=3.5, color=PALETTE[j % len(PALETTE)],
                        label=_short(s))
            ax.set_ylim(-0.03, 1.03)
            ax.set_title(_short(p, 30), loc="left")
            ax.set_xlabel("round")
            rounds = sorted(set(sub["round"].astype(int)))
            if rounds:
                ax.set_xticks(rounds if len(rounds) <= 12 else rounds[:: max(1, len(rounds) // 10)])
            ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
        axes[0].set_ylabel("share cooperating")
        axes[-1].legend(title=series.replace("_", " "), loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.suptitle(title, x=0.01, ha="left", fontsize=10, fontweight="bold")
        return to_svg(fig)


def monitor_panels(by_round: pd.DataFrame, black_box: pd.DataFrame, *, series: str = "condition",
                   title: str = "White-box monitor beside the questionnaire") -> str:
    """One row per trait: left, the projection change since round 1 per round (a line per ``series`` value,
    its 95 % interval as a band); right, the questionnaire drift of the same trait per ``series`` value (a
    point and its 95 % interval). ``by_round`` has ``trait``, ``series``, ``round``, ``estimate``,
    ``ci_low``, ``ci_high``; ``black_box`` has ``trait``, ``series``, ``estimate``, ``ci_low``, ``ci_high``."""
    with rc_context(_RC):
        traits = list(dict.fromkeys(by_round["trait"].astype(str)))
        ss = list(dict.fromkeys(by_round[series].astype(str)))
        fig = _figure(8.0, 2.6 * len(traits) + 0.6)
        grid = fig.subplots(len(traits), 2, squeeze=False, width_ratios=[2.2, 1.0])
        for row, trait in zip(grid, traits, strict=True):
            left, right = row
            lines = by_round[by_round["trait"].astype(str) == trait]
            for j, s in enumerate(ss):
                line = lines[lines[series].astype(str) == s].sort_values("round")
                if line.empty:
                    continue
                colour = PALETTE[j % len(PALETTE)]
                x = line["round"].to_numpy(float)
                left.plot(x, line["estimate"], marker="o", markersize=3.5, color=colour,
                          label=f"{j + 1}. {_short(s, 40)}")
                low, high = line["ci_low"].to_numpy(float), line["ci_high"].to_numpy(float)
                ok = np.isfinite(low) & np.isfinite(high)
                if ok.any():
                    left.fill_between(x[ok], low[ok], high[ok], color=colour, alpha=0.15, linewidth=0)
            left.axhline(0, color="#444", linewidth=0.8)
            left.set_title(_short(f"{trait}: projection change since round 1", 60), loc="left")
            left.set_xlabel("round")
            left.set_ylabel("projection − round 1")
            rounds = sorted(set(lines["round"].astype(int)))
            if rounds:
                left.set_xticks(rounds if len(rounds) <= 12 else rounds[:: max(1, len(rounds) // 10)])
            left.grid(axis="y", color="#e5e5e5", linewidth=0.6)
            box = black_box[black_box["trait"].astype(str) == trait]
            for j, s in enumerate(ss):
                point = box[box[series].astype(str) == s]
                if point.empty:
                    continue
                est = float(point["estimate"].iloc[0])
                low, high = float(point["ci_low"].iloc[0]), float(point["ci_high"].iloc[0])
                err = [[est - low if math.isfinite(low) else 0.0], [high - est if math.isfinite(high) else 0.0]]
                right.errorbar([j], [est], yerr=np.abs(err), fmt="o", color=PALETTE[j % len(PALETTE)], capsize=3,
                               markersize=4)
            right.axhline(0, color="#444", linewidth=0.8)
            right.set_xticks(range(len(ss)), [str(j + 1) for j in range(len(ss))])
            right.set_xlim(-0.6, len(ss) - 0.4)
            right.set_title("questionnaire drift", loc="left")
            right.grid(axis="y", color="#e5e5e5", linewidth=0.6)
        grid[-1][0].legend(loc="upper left", bbox_to_anchor=(0.0, -0.3), ncols=2)
        fig.suptitle(title, x=0.01, ha="left", fontsize=10, fontweight="bold")
        return to_svg(fig)


def heatmap(matrix: pd.DataFrame, *, title: str, colorbar: str, annotate: bool = True) -> str:
    """A diverging heat map centred on 0 (rows and columns labelled by the frame's index and columns)."""
    with rc_context(_RC):
        values = matrix.to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        bound = float(np.max(np.abs(finite))) if finite.size else 1.0
        bound = bound if bound > 0 else 1.0
        rows, cols = matrix.shape
        fig = _figure(min(13.0, 3.2 + 0.95 * cols), 1.6 + 0.34 * rows)
        ax = fig.add_subplot()
        masked = np.ma.masked_invalid(values)
        image = ax.imshow(masked, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -bound, bound), aspect="auto")
        labels = ["\n".join(_short(part.strip(), 18) for part in str(c).split(" · ")) for c in matrix.columns]
        ax.set_xticks(range(cols), labels, rotation=0 if cols <= 8 else 35, ha="center" if cols <= 8 else "right",
                      fontsize=8 if cols <= 12 else 7)
        ax.set_yticks(range(rows), [_short(str(r), 34) for r in matrix.index])
        ax.spines[:].set_visible(False)
        if annotate and rows * cols <= 400:
            for i in range(rows):
                for j in range(cols):
                    v = values[i, j]
                    if math.isfinite(v):
                        ax.text(j, i, f"{v:+.2f}", ha="center", va="center", fontsize=7,
                                color="white" if abs(v) > 0.6 * bound else "#222")
        cb = fig.colorbar(image, ax=ax, shrink=0.8)
        cb.set_label(colorbar)
        ax.set_title(title, loc="left")
        return to_svg(fig)


def attention_lines(data: pd.DataFrame, *, title: str = "Attention to the system prompt") -> str:
    """Mean share of attention to the system prompt against context length, one line per intervention.

    ``data`` has columns ``intervention``, ``tokens`` (bin centre), ``share_system`` and ``se``.
    """
    with rc_context(_RC):
        fig = _figure(6.8, 3.2)
        ax = fig.add_subplot()
        for j, (name, line) in enumerate(data.groupby("intervention", observed=True, sort=True)):
            line = line.sort_values("tokens")
            colour = PALETTE[j % len(PALETTE)]
            ax.plot(line["tokens"], line["share_system"], marker="o", markersize=3, color=colour,
                    label=_short(str(name)))
            se = line["se"].fillna(0).to_numpy(dtype=float)
            ax.fill_between(line["tokens"], line["share_system"] - se, line["share_system"] + se, color=colour,
                            alpha=0.15, linewidth=0)
            if "baseline_system" in line:  # dilution: system tokens / all tokens (decay beyond it is real)
                ax.plot(line["tokens"], line["baseline_system"], linestyle="--", linewidth=1, color=colour,
                        label=f"{_short(str(name))}: dilution baseline")
        ax.set_xlabel("tokens in the context so far")
        ax.set_ylabel("share of attention to system prompt")
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
        ax.set_title(title, loc="left")
        ax.legend(title="intervention", loc="center left", bbox_to_anchor=(1.0, 0.5))
        return to_svg(fig)


def attention_figure(by_length: pd.DataFrame, *, layers: int = 0) -> Figure:
    """The PNG plot of ``contagion attention``: attention to the system prompt against tokens so far.

    ``by_length`` is :func:`contagion.analysis.attention.system_share_by_length`; one line (± 1 SE band)
    per intervention. Drawn with matplotlib's defaults (not the report's SVG style); save with
    :func:`save_png`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(7.5, 3.8), layout="constrained")
    FigureCanvasAgg(fig)  # render with Agg, whatever the user's default backend
    ax = fig.add_subplot()
    for j, (name, line) in enumerate(by_length.groupby("intervention", sort=True)):
        line = line.sort_values("tokens")
        colour = f"C{j % 10}"
        ax.plot(line["tokens"], line["share_system"], marker="o", markersize=3.5, color=colour, label=str(name))
        low = line["share_system"] - line["se"]
        high = line["share_system"] + line["se"]
        ax.fill_between(line["tokens"], low, high, color=colour, alpha=0.15, linewidth=0)
        if "baseline_system" in line:  # dilution: system tokens / all tokens
            ax.plot(line["tokens"], line["baseline_system"], linestyle="--", linewidth=1, color=colour,
                    label=f"{name}: dilution baseline")
    ax.set_xlabel("tokens in the player's context so far")
    ax.set_ylabel("share of attention to the system prompt")
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)
    which = f"mean over all {layers} layers" if layers else "mean over layers"
    ax.set_title(f"Attention to the system prompt as the conversation grows ({which}, heads averaged)",
                 loc="left", fontsize=9)
    ax.legend(title="intervention", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
    return fig


def save_png(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a PNG at ``path`` (no timestamp or version in its metadata)."""
    fig.savefig(path, format="png", dpi=150, metadata={"Software": None})


def write_attention_png(turn_means: pd.DataFrame, layers: int, path: Path) -> None:
    """``contagion attention``'s plot of its turn means (:func:`attention_figure` of
    :func:`contagion.analysis.attention.system_share_by_length`), written as a PNG at ``path``."""
    from contagion.analysis.attention import system_share_by_length

    save_png(attention_figure(system_share_by_length(turn_means), layers=layers), path)

"""Reading the attention table: how it is aggregated for the plots and the report's statistics.

``contagion attention`` (:mod:`contagion.whitebox.attention`, which runs the white-box model) writes the
table, whose columns and Parquet types are :mod:`contagion.whitebox.attention_table`'s (re-exported here);
the HTML report and the PNG plot read it. Each message of a player's history belongs to one segment
(:data:`SEGMENTS`), and each row holds the share of attention paid to every segment by the position that
produces the player's next reply, in one layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# the table's schema belongs to the measurement that writes it; re-exported here, where it is read
from contagion.whitebox.attention_table import (
    BASELINE,
    COLUMNS,
    INJECTION,
    INT_COLUMNS,
    OBSERVATION,
    OTHER_PROMPTS,
    OTHERS,
    OWN,
    SEGMENTS,
    SYSTEM,
    TABLE_COLUMNS,
    TEMPLATE,
    parquet_schema,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["BASELINE", "COLUMNS", "INJECTION", "INT_COLUMNS", "OBSERVATION", "OTHERS", "OTHER_PROMPTS", "OWN",
           "SEGMENTS", "SYSTEM", "TABLE_COLUMNS", "TEMPLATE", "Correlation", "correlations", "decay_by_agent",
           "parquet_schema", "system_share_by_length"]


def system_share_by_length(turn_means: pd.DataFrame, *, max_exact: int = 12, bins: int = 10) -> pd.DataFrame:
    """Mean share of attention to the system prompt by intervention and context length.

    ``turn_means`` has one row per turn (``intervention``, ``tokens_so_far``, ``share_system`` already
    averaged over layers). Lengths are used as they are when there are at most ``max_exact`` distinct
    values, else grouped into ``bins`` equal-width bins (``tokens`` is the bin centre). Returns
    ``intervention``, ``tokens``, ``share_system``, ``se`` (standard error over turns; 0 for one
    turn) and ``n`` (turns).
    """
    import numpy as np

    df = turn_means.copy()
    tokens = df["tokens_so_far"].to_numpy(dtype=float)
    if len(np.unique(tokens)) <= max_exact:
        df["tokens"] = tokens
    else:
        edges = np.linspace(tokens.min(), tokens.max(), bins + 1)
        # bins are closed on the left, the last one on both sides: every length falls in one
        index = np.clip(np.searchsorted(edges, tokens, side="right") - 1, 0, bins - 1)
        df["tokens"] = (edges[index] + edges[index + 1]) / 2
    extra = {BASELINE: (BASELINE, "mean")} if BASELINE in df.columns else {}
    out = (
        df.groupby(["intervention", "tokens"], observed=True)
        .agg(share_system=("share_system", "mean"), sd=("share_system", "std"), n=("share_system", "size"), **extra)
        .reset_index()
    )
    out["se"] = (out["sd"] / out["n"].pow(0.5)).fillna(0.0)
    return out.drop(columns="sd")


@dataclass
class Correlation:
    """A correlation with its 95 % confidence interval (Fisher z)."""

    method: str
    r: float
    ci_low: float
    ci_high: float
    p: float
    n: int


def _fisher_ci(r: float, n: int, se_scale: float = 1.0) -> tuple[float, float]:
    import math

    from scipy import stats

    if n < 4 or not abs(r) < 1:
        return math.nan, math.nan
    z, half = math.atanh(r), stats.norm.ppf(0.975) * se_scale / math.sqrt(n - 3)
    return math.tanh(z - half), math.tanh(z + half)


def correlations(x: Any, y: Any) -> list[Correlation]:
    """Pearson's r and Spearman's ρ of ``x`` and ``y`` with 95 % Fisher-z intervals (SE 1/√(n−3) for r;
    1.06/√(n−3) for ρ, Fieller, Hartley & Pearson 1957). NaN where n < 4 or a variable is constant."""
    import math

    import numpy as np
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    out = []
    for method, scale in (("Pearson", 1.0), ("Spearman", 1.06)):
        if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
            out.append(Correlation(method, math.nan, math.nan, math.nan, math.nan, n))
            continue
        res = stats.pearsonr(x, y) if method == "Pearson" else stats.spearmanr(x, y)
        r, p = float(res[0]), float(res[1])
        low, high = _fisher_ci(r, n, scale)
        out.append(Correlation(method, r, low, high, p, n))
    return out


def decay_by_agent(turn_means: pd.DataFrame) -> pd.DataFrame:
    """Per (game, player): attention decay from its first to its last measured turn.

    ``turn_means`` has one row per turn (``game``, ``player``, ``turn``, ``share_system`` and, when
    present, ``baseline_system``, averaged over layers). ``decay`` = share at the first turn − share at the
    last; ``decay_beyond_dilution`` = the same for ``share_system − baseline_system`` (NaN without the
    baseline); ``turns`` the turns measured. Agents with a single turn are left out.
    """
    import numpy as np
    import pandas as pd

    rows = []
    for (game, player), sub in turn_means.groupby(["game", "player"], observed=True, sort=True):
        sub = sub.sort_values("turn")
        if len(sub) < 2:
            continue
        first, last = sub.iloc[0], sub.iloc[-1]
        beyond = (float(first["share_system"] - first[BASELINE]) - float(last["share_system"] - last[BASELINE])
                  if BASELINE in sub.columns else np.nan)
        rows.append({"game": str(game), "player": str(player),
                     "intervention": str(first.get("intervention", "")),
                     "decay": float(first["share_system"]) - float(last["share_system"]),
                     "decay_beyond_dilution": beyond, "turns": len(sub)})
    return pd.DataFrame(rows, columns=["game", "player", "intervention", "decay", "decay_beyond_dilution", "turns"])

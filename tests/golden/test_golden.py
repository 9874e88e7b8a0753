"""The trial redesign's golden test: records of fixed seeds on deterministic players do not change.

``records.json.gz`` was written by the code before the redesign (``python -m tests.golden.make_golden
--write`` on commit fed050f). The spec hash, the spec's layout, the schema version, the
``language_model`` and ``strategy`` fields added since and the timing fields are normalised away (see
``make_golden.normalise``); everything else — every message each player saw, injections, actions,
payoffs, profiles — must be equal.
"""

from __future__ import annotations

import pytest

from tests.golden.make_golden import collect, load_golden


@pytest.mark.slow
def test_records_are_those_written_before_the_redesign() -> None:
    golden = load_golden()
    records = collect()
    assert set(records) == set(golden)
    differ = sorted(k for k in golden if golden[k] != records[k])
    assert not differ, f"{len(differ)} of {len(golden)} records changed, e.g. {differ[:5]}"

"""`meshlab.live.record` on the real kernel: a small recording, complete and agreeing."""

from __future__ import annotations

import datetime
import json

import pytest

from meshlab.live import unavailable_reason

pytestmark = [pytest.mark.live,
              pytest.mark.skipif(unavailable_reason() is not None,
                                 reason=f"live lab unavailable: {unavailable_reason()}")]


def test_record_makes_a_complete_agreeing_document(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from meshlab.live.record import describe, dumps, load, missing_keys, record, write

    document = record(seeds=(7,), configs=2, per_config=5, limits=(1,),
                      today=datetime.date(2000, 1, 2))
    assert missing_keys(document) == []
    assert document["agree"] is True, describe(document)
    assert document["recorded"] == "2000-01-02"
    assert document["randomized"]["runs"][0]["seed"] == 7
    assert document["summary"]["agreed"]["random_connections"] == [10, 10]
    assert document["verify"]["agree"] is True
    # nothing outside "timings" carries a duration
    assert "seconds" not in json.dumps({k: v for k, v in document.items() if k != "timings"})
    path = write(document, tmp_path / "run.json")
    assert load(path) == json.loads(dumps(document))

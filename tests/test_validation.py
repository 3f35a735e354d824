"""Every field of a request is validated the same way on SQLite and PostgreSQL: generated inputs go
through `submit` on both stores, which must accept or refuse each one alike, with a one-line error and
never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from producer.submit import submit
from schemas.db import Store, open_store
from schemas.errors import TtsfleetError
from schemas.messages import JobRequest
from schemas.settings import ProducerSettings

_ODD = st.sampled_from(["\x00", "\ud800", "\udfff", "é", "😀", "\u0301" * 30, "x" * 600, "\n", "../", ""])
_FIELD = st.one_of(st.none(), st.none(), st.none(), st.text(max_size=40), _ODD,
                   st.lists(_ODD, max_size=4).map("".join))
# Mostly speakable text with odd characters mixed in, so most requests reach the store.
_TEXT = st.one_of(_FIELD, st.lists(st.one_of(st.sampled_from(["Hello there.", "Read this notice. "]), _ODD),
                                   min_size=1, max_size=5).map("".join))
_VOICE = st.one_of(st.none(), st.none(), _FIELD)


@pytest.fixture
def stores(sqlite_url: str, pg_url: str) -> Iterator[dict[str, Store]]:
    opened = {"sqlite": open_store(sqlite_url), "postgresql": open_store(pg_url)}
    yield opened
    for store in opened.values():
        store.dispose()


def _outcome(store: Store, fields: dict[str, object], out: Path) -> str:
    """"ok", or the refusal's class: whatever happens must be one of ttsfleet's one-line errors."""
    try:
        request = JobRequest.model_validate(fields)
    except ValidationError:
        return "invalid request"
    try:
        submit([request], ProducerSettings(output_dir=out), store, publisher=None, force=True)
    except TtsfleetError as err:
        assert "\n" not in str(err)
        str(err).encode("utf-8")  # printable on any terminal
        return type(err).__name__
    return "ok"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_TEXT, title=_FIELD, group_title=_FIELD, voice=_VOICE, job_id=_FIELD, source=_FIELD)
def test_both_stores_accept_and_refuse_the_same_requests(stores: dict[str, Store], tmp_path: Path,
                                                          text: str | None, title: str | None,
                                                          group_title: str | None, voice: str | None,
                                                          job_id: str | None, source: str | None) -> None:
    fields = {"text": text if text is not None else "", "title": title, "group_title": group_title,
              "group_index": 0 if group_title is not None else None, "voice": voice, "id": job_id,
              "source": source}
    outcomes = {name: _outcome(store, fields, tmp_path) for name, store in stores.items()}
    assert outcomes["sqlite"] == outcomes["postgresql"], (fields, outcomes)


@pytest.mark.parametrize("fields", [
    {"text": "Hello there.", "title": "T" * 2000},  # shortened, not refused by PostgreSQL
    {"text": "Hello there.", "group_title": "B" * 600, "group_index": 0},
    {"text": "Hello there.", "source": "file-\udcff.txt"},  # an undecodable file name
    {"text": "Hello 😀 there.", "title": "😀 ünïcödé"},
])
def test_edge_values_every_store_can_hold_are_accepted_by_both(stores: dict[str, Store], tmp_path: Path,
                                                                fields: dict[str, object]) -> None:
    assert {name: _outcome(store, fields, tmp_path) for name, store in stores.items()} == {
        "sqlite": "ok", "postgresql": "ok"}


_JSON_VALUE = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _FIELD.filter(
    lambda v: v is not None), lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                         max_size=3), max_leaves=6)
_LINE = st.one_of(
    st.dictionaries(st.sampled_from(["text", "id", "voice", "format", "title", "priority", "extra"]), _JSON_VALUE,
                    max_size=6).map(lambda d: __import__("json").dumps(d)),
    st.text(max_size=60),  # not JSON at all
)


@settings(max_examples=150, deadline=None)
@given(lines=st.lists(_LINE, min_size=1, max_size=4))
def test_generated_jsonl_lines_give_requests_or_one_line_errors(lines: list[str]) -> None:
    import io
    import tempfile

    from producer.inputs import read_inputs
    from schemas.errors import InvalidInput
    from schemas.status import AudioFormat

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "jobs.jsonl"
        path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
        try:
            requests = read_inputs([str(path)], io.StringIO(), voice=None, format=AudioFormat.WAV, priority=5)
        except InvalidInput as err:
            assert "\n" not in str(err)
            str(err).encode("utf-8")
            return
    assert all(isinstance(r, JobRequest) for r in requests)

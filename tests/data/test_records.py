from __future__ import annotations

import json
from pathlib import Path

import pytest

from groundinggpt.data.records import RecordStore, SampleError, read_records

RECORDS = [{"id": i, "conversations": [{"from": "human", "value": f"q{i} é"}]} for i in range(5)]


@pytest.mark.parametrize("jsonl", [False, True])
def test_reads_json_list_and_jsonl_alike(tmp_path: Path, jsonl: bool) -> None:
    path = tmp_path / "a.json"
    if jsonl:
        path.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n\n", encoding="utf-8")
    else:
        path.write_text("\ufeff" + json.dumps(RECORDS, indent=2), encoding="utf-8")
    store = RecordStore(path)
    assert len(store) == 5
    assert store[3] == RECORDS[3] and store[-1] == RECORDS[4]
    assert list(store) == read_records(path) == RECORDS
    with pytest.raises(IndexError):
        store[5]


def test_records_are_decoded_only_when_asked(tmp_path: Path) -> None:
    """One bad record is one bad sample, reported with its reason when it is read."""
    lines = [json.dumps(RECORDS[0]).encode(), b'{"id": "bad \xff\xfe"}', b"{not json", b"[1, 2]"]
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines))
    store = RecordStore(tmp_path / "a.jsonl")
    assert len(store) == 4 and store[0] == RECORDS[0]
    for index, kind in [(1, "non_utf8"), (2, "malformed_record"), (3, "malformed_record")]:
        with pytest.raises(SampleError) as err:
            store[index]
        assert err.value.kind == kind


def test_non_utf8_inside_a_json_list_spoils_only_its_record(tmp_path: Path) -> None:
    body = b'[{"id": "ok", "v": "\xc3\xa9"}, {"id": "bad", "v": "\xe9t\xe9"}, {"id": "ok2"}]'
    (tmp_path / "a.json").write_bytes(body)
    store = RecordStore(tmp_path / "a.json")
    assert store[0] == {"id": "ok", "v": "é"} and store[2] == {"id": "ok2"}
    with pytest.raises(SampleError, match="UTF-8"):
        store[1]


def test_broken_json_list_and_missing_file_fail_clearly(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('[{"id": 1}, {"id": ')
    with pytest.raises(ValueError, match="invalid JSON list element"):
        RecordStore(tmp_path / "a.json")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        RecordStore(tmp_path / "nope.json")

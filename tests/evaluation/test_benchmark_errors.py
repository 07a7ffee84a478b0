"""Benchmark readers name the file, the line or item, and the problem of a bad annotation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from groundinggpt.evaluation.annotations import read_json_or_jsonl, read_utf8
from groundinggpt.evaluation.benchmarks import load_benchmark

LINES = [
    "AO8RW 0.0 6.9##a person is putting a book on a shelf.",
    "Y6R7T 1.2 5.0##someone opens it.",
]


def test_latin1_charades_file_names_file_line_and_byte(tmp_path: Path) -> None:
    txt = tmp_path / "charades_sta_test.txt"
    text = "\n".join([LINES[0], "Y6R7T 1.2 5.0##a person drinks a caf\u00e9 latte.", LINES[1]])
    txt.write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match=r"charades_sta_test.txt:2: .*not UTF-8.*0xe9") as err:
        load_benchmark("charades_sta", txt, tmp_path)
    assert isinstance(err.value.__cause__, UnicodeDecodeError)
    assert not isinstance(err.value, UnicodeDecodeError)  # a plain ValueError, not the bare one


def test_utf8_charades_file_with_bom_and_accents_reads(tmp_path: Path) -> None:
    txt = tmp_path / "charades_sta_test.txt"
    txt.write_bytes("\n".join(LINES).replace("opens", "op\u00e9ns").encode("utf-8-sig"))
    samples = load_benchmark("charades_sta", txt, tmp_path)
    assert [s.meta["video_id"] for s in samples] == ["AO8RW", "Y6R7T"]


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_latin1_json_annotation_names_the_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"a{suffix}"
    path.write_bytes(json.dumps({"q": "x"}).encode() + b"\n" + b'{"q": "\xe9t\xe9"}\n')
    with pytest.raises(ValueError, match=rf"a{suffix}:2: annotation file is not UTF-8"):
        read_json_or_jsonl(path)


def test_read_utf8_names_what_the_file_is(tmp_path: Path) -> None:
    path = tmp_path / "instances.json"
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match=r"instances.json:1: COCO instances is not UTF-8"):
        read_utf8(path, "COCO instances")


@pytest.mark.parametrize(
    ("bbox", "shown"),
    [
        ([["0.1", 0.2, 0.5, 0.6]], r"'0.1' \(str\)"),
        ([[0.1, "abc", 0.5, 0.6]], r"'abc' \(str\)"),
        ([[0.1, 0.2, None, 0.6]], r"None \(NoneType\)"),
        ([[0.1, 0.2, 0.5, 0.6], [True, 0.2, 0.5, 0.6]], r"bbox 1 .*True \(bool\)"),
        ([[0.1, 0.2, [0.5], 0.6]], r"\[0.5\] \(list\)"),
    ],
)
def test_vggss_non_number_coordinate_names_file_item_and_value(
    tmp_path: Path, bbox: list, shown: str
) -> None:
    ann = tmp_path / "vggss.json"
    entries = [{"file": "ok", "bbox": [[0, 0, 1, 1]]}, {"file": "clip_b", "bbox": bbox}]
    ann.write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=rf"vggss.json: item 1 \('clip_b'\).*{shown}"):
        load_benchmark("vggss", ann, tmp_path, audio_dir=tmp_path)


def test_vggss_malformed_entries_name_the_item(tmp_path: Path) -> None:
    ann = tmp_path / "vggss.json"
    ann.write_text(json.dumps([{"file": "a", "bbox": [[0, 0, 1, 1]]}, {"class": "dog"}]))
    with pytest.raises(ValueError, match=r"vggss.json: item 1: every entry needs a 'file' id"):
        load_benchmark("vggss", ann, tmp_path, audio_dir=tmp_path)
    ann.write_text(json.dumps([{"file": "a", "bbox": [[0, 0, 1]]}]))
    with pytest.raises(ValueError, match=r"vggss.json: item 0 \('a'\) needs 'bbox'"):
        load_benchmark("vggss", ann, tmp_path, audio_dir=tmp_path)

"""Annotation files in the released format, held compactly and decoded one record at a time.

Released annotation files are large (hundreds of thousands of records). Parsing them into
Python dicts would cost gigabytes per process and, because reference counts touch every
object, DataLoader workers would slowly copy all of it. `RecordStore` instead keeps each
record's raw JSON bytes in one numpy buffer (shared copy-on-write by forked workers) and
parses a record only when it is asked for. A record that is not valid UTF-8 or not valid JSON
is reported when it is read (`SampleError`), so one bad line skips one sample, not the file.

A file that holds no records at all (empty, UTF-16/32 instead of UTF-8, a top level that is
not a list of records such as ``{"data": [...]}``, a JSON list that cannot be split) fails
loudly when it is opened (`AnnotationFileError`), instead of skipping every record of it in
every epoch.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np


class SampleError(ValueError):
    """A record that cannot become a training sample.

    Args:
        kind: short category used to count skips (``no_conversation``, ``too_long``...).
        message: what exactly is wrong, for the log.

    Example:
        >>> SampleError("empty_answer", "turn 1 is empty").kind
        'empty_answer'
    """

    def __init__(self, kind: str, message: str = "") -> None:
        self.kind = kind
        super().__init__(message or kind)


class AnnotationFileError(ValueError):
    """An annotation file that cannot be read as records at all.

    Args:
        path: the file.
        kind: short category (``empty_annotation_file``, ``not_utf8_annotation_file``,
            ``not_a_record_list``, ``broken_json_list``).
        reason: what exactly is wrong.

    Example:
        >>> str(AnnotationFileError("a.json", "empty_annotation_file", "the file is empty"))
        'annotation file a.json: the file is empty'
    """

    def __init__(self, path: str | Path, kind: str, reason: str) -> None:
        self.path = str(path)
        self.kind = kind
        self.reason = reason
        super().__init__(f"annotation file {self.path}: {reason}")


# A JSON string (unrolled, so linear) or one bracket: enough to find where a value ends.
_STRUCTURE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _value_end(text: str, pos: int) -> int:
    """End of the JSON array/object starting at ``pos``, by bracket counting (no recursion).

    Used for values nested too deeply for `json` (RecursionError): the value is still cut
    out as one record, which then fails alone when it is read.
    """
    depth = 0
    for match in _STRUCTURE.finditer(text, pos):
        token = match.group()
        if token in "[{":
            depth += 1
        elif token in "]}":
            depth -= 1
        if depth == 0:
            return match.end()
    raise ValueError(f"JSON list element at character {pos} is not closed")


def _json_list_spans(text: str) -> Iterator[tuple[int, int]]:
    """``(start, end)`` character spans of the elements of a JSON list, parsed one by one."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    n = len(text)
    while True:
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= n:
            raise ValueError("JSON list is not closed with ']'")
        if text[pos] == "]":
            return
        try:
            _, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            # A broken JSON list cannot be re-synchronised: fail with the position.
            raise ValueError(f"invalid JSON list element at character {pos}: {err}") from err
        except RecursionError:
            end = _value_end(text, pos)
        yield pos, end
        pos = end


class RecordStore(Sequence):
    """The records of one JSON-list or JSONL file, decoded lazily.

    Args:
        path: the annotation file.

    Example:
        >>> store = RecordStore("refcoco.json")  # doctest: +SKIP
        >>> len(store), store[0]["conversations"][0]["from"]  # doctest: +SKIP
        (320000, 'human')
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"annotation file not found: {self.path}")
        raw = self.path.read_bytes()
        try:
            chunks = self._split(raw)
        except AnnotationFileError:
            raise
        except ValueError as err:
            raise AnnotationFileError(self.path, "broken_json_list", str(err)) from err
        if not chunks:
            raise AnnotationFileError(self.path, "empty_annotation_file", "the file has no records")
        self._offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
        np.cumsum([len(c) for c in chunks], out=self._offsets[1:])
        self._buffer = np.frombuffer(b"".join(chunks), dtype=np.uint8)

    def _fail(self, kind: str, reason: str) -> AnnotationFileError:
        return AnnotationFileError(self.path, kind, reason)

    def _check_encoding(self, raw: bytes) -> None:
        """Refuse UTF-16/32 files, with or without a byte-order mark."""
        boms = {
            "UTF-32": (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE),  # before UTF-16: FF FE 00 00
            "UTF-16": (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE),
        }
        for name, marks in boms.items():
            if raw.startswith(marks):
                raise self._fail(
                    "not_utf8_annotation_file",
                    f"the file is {name} (byte-order mark {raw[:2].hex(' ')}); "
                    "annotation files must be UTF-8",
                )
        head = raw[:4096]
        if head.count(0) > len(head) // 4:  # UTF-16/32 text without a mark is full of NULs
            raise self._fail(
                "not_utf8_annotation_file",
                "the file is mostly NUL bytes (UTF-16/32 without a byte-order mark?); "
                "annotation files must be UTF-8",
            )

    def _check_jsonl(self, text: str) -> None:
        """Refuse a top-level JSON object that is not one record per line (``{"data": [...]}``)."""
        start = len(text) - len(text.lstrip())
        if not text.startswith("{", start):
            raise self._fail(
                "not_a_record_list",
                f"the top level starts with {text[start : start + 20]!r}, expected a JSON list "
                "of records ('[') or JSONL with one record object per line ('{')",
            )
        try:
            first, end = json.JSONDecoder().raw_decode(text, start)
        except (json.JSONDecodeError, RecursionError):
            return  # a broken first line is that record's problem, judged when it is read
        if "\n" in text[start:end].strip():
            raise self._fail(
                "not_a_record_list",
                "the top level is one JSON object spanning several lines, not a JSON list of "
                f"records or JSONL (keys: {sorted(first)[:5]})",
            )
        wrapped = [
            k for k, v in first.items() if isinstance(v, list) and v and isinstance(v[0], dict)
        ]
        if "conversations" not in first and wrapped and not text[end:].strip():
            raise self._fail(
                "not_a_record_list",
                f"the top level is an object holding the records under {wrapped[0]!r}, "
                "expected a JSON list of records",
            )

    def _split(self, raw: bytes) -> list[bytes]:
        self._check_encoding(raw)
        # surrogateescape keeps undecodable bytes so each record's own bytes can be recovered
        # (and judged) separately, instead of one bad byte failing the whole file.
        text = raw.decode("utf-8", errors="surrogateescape").lstrip("\ufeff")
        if not text.strip():
            raise self._fail("empty_annotation_file", "the file is empty")
        if text.lstrip().startswith("["):
            return [
                text[s:e].encode("utf-8", errors="surrogateescape")
                for s, e in _json_list_spans(text)
            ]
        self._check_jsonl(text)
        return [line for line in raw.splitlines() if line.strip()]

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def raw(self, index: int) -> bytes:
        """The record's bytes as stored in the file."""
        return self._buffer[self._offsets[index] : self._offsets[index + 1]].tobytes()

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        try:
            text = self.raw(index).decode("utf-8")
        except UnicodeDecodeError as err:
            raise SampleError("non_utf8", f"record is not valid UTF-8 ({err})") from err
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise SampleError("malformed_record", f"record is not valid JSON ({err})") from err
        except RecursionError as err:
            raise SampleError(
                "malformed_record", "record is nested deeper than the JSON parser allows"
            ) from err
        if not isinstance(record, dict):
            raise SampleError("malformed_record", f"record is a {type(record).__name__}")
        return record


def read_records(path: str | Path) -> list[dict]:
    """Read every record of a JSON list or JSONL file (eagerly; bad records raise)."""
    return list(RecordStore(path))

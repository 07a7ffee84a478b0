"""Annotation files in the released format, held compactly and decoded one record at a time.

Released annotation files are large (hundreds of thousands of records). Parsing them into
Python dicts would cost gigabytes per process and, because reference counts touch every
object, DataLoader workers would slowly copy all of it. `RecordStore` instead keeps each
record's raw JSON bytes in one numpy buffer (shared copy-on-write by forked workers) and
parses a record only when it is asked for. A record that is not valid UTF-8 or not valid JSON
is reported when it is read (`SampleError`), so one bad line skips one sample, not the file.
"""

from __future__ import annotations

import json
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
        chunks = self._split(raw)
        self._offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
        np.cumsum([len(c) for c in chunks], out=self._offsets[1:])
        self._buffer = np.frombuffer(b"".join(chunks), dtype=np.uint8)

    @staticmethod
    def _split(raw: bytes) -> list[bytes]:
        # surrogateescape keeps undecodable bytes so each record's own bytes can be recovered
        # (and judged) separately, instead of one bad byte failing the whole file.
        text = raw.decode("utf-8", errors="surrogateescape").lstrip("\ufeff")
        if text.lstrip().startswith("["):
            return [
                text[s:e].encode("utf-8", errors="surrogateescape")
                for s, e in _json_list_spans(text)
            ]
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
        if not isinstance(record, dict):
            raise SampleError("malformed_record", f"record is a {type(record).__name__}")
        return record


def read_records(path: str | Path) -> list[dict]:
    """Read every record of a JSON list or JSONL file (eagerly; bad records raise)."""
    return list(RecordStore(path))

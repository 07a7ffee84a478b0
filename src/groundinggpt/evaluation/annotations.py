"""Annotation-file helpers shared by the benchmark readers: JSON(L), paths, prompts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from groundinggpt.data.media import MediaError, confined_path

# The media placeholders a benchmark prompt of each task must carry.
PLACEHOLDERS = {
    "rec": ("<image>",),
    "vtg": ("<video>",),
    "pope": ("<image>",),
    "sl": ("<image>", "<sound>"),
    "res": ("<image>",),
    "gcg": ("<image>",),
    "avs": ("<image>", "<sound>"),
}


def fill_prompt(template: str, query: str, task: str) -> str:
    """``template`` with ``{query}`` replaced; it must carry the task's media placeholders.

    A plain replace, not `str.format`: other braces (``{s, e}`` in a VTG hint) stay literal.

    Args:
        template: the prompt template, e.g. ``"<image>\\nOutput the coordinate of {query}."``.
        query: the expression / sentence / question.
        task: a key of `PLACEHOLDERS` (which placeholders are required).

    Example:
        >>> fill_prompt("<image>\\nOutput the coordinate of {query}.", "the dog", "rec")
        '<image>\\nOutput the coordinate of the dog.'
    """
    missing = [p for p in PLACEHOLDERS[task] if p not in template]
    if missing:
        raise ValueError(f"prompt {template!r} for task {task!r} lacks the placeholders {missing}")
    return template.replace("{query}", query)


def query_text(text: str) -> str:
    """An expression / sentence as it goes into a prompt: stripped, no final full stop."""
    return text.strip().rstrip(".").strip()


def read_utf8(path: Path, what: str = "annotation file") -> str:
    """The text of ``path``, decoded as UTF-8 (a leading BOM is dropped).

    A file in another encoding is a `ValueError` naming the file, the line and the byte
    instead of a bare `UnicodeDecodeError`.

    Args:
        path: the file to read.
        what: what the file is, for the message.

    Example:
        >>> _ = Path("/tmp/latin1.txt").write_bytes(b"ok\\ncaf\\xe9\\n")
        >>> read_utf8(Path("/tmp/latin1.txt"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: /tmp/latin1.txt:2: annotation file is not UTF-8 (byte 0xe9 at offset 6...
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        bad = data[err.start : err.end].hex(" ")
        raise ValueError(
            f"{path}:{line}: {what} is not UTF-8 (byte 0x{bad} at offset {err.start}: "
            f"{err.reason}); re-encode it, e.g. `iconv -f latin1 -t utf-8`"
        ) from err


def read_json_or_jsonl(path: Path) -> Any:
    """A JSON document, or the list of objects of a JSONL file (errors name the line).

    ``.jsonl`` files are always read line by line; other suffixes as one document first.

    A one-line JSONL file is also a JSON document (one object): callers that expect rows
    wrap a lone object into a list (`as_rows`). A file that is not UTF-8 is a `ValueError`
    naming it (`read_utf8`).
    """
    text = read_utf8(path)
    if path.suffix != ".jsonl":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: neither JSON nor JSONL ({err})") from err
    return rows


def as_rows(data: Any, path: Path) -> list[dict]:
    """``data`` as a list of JSON objects (a lone object is one row).

    Example:
        >>> as_rows({"question_id": 1}, Path("one_line.json"))
        [{'question_id': 1}]
    """
    rows = [data] if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path}: expected JSON objects, one per item")
    return rows


def as_paths(annotation_file: Any) -> list[Path]:
    """One path or a list of paths (a Hydra ListConfig too) -> a non-empty list of paths."""
    if isinstance(annotation_file, (str, os.PathLike)):
        return [Path(annotation_file)]
    paths = [Path(p) for p in annotation_file]
    if not paths:
        raise ValueError("annotation_file is an empty list")
    return paths


def existing_file(path: Path, what: str = "annotation file") -> Path:
    """``path`` if it exists (file or folder), else `FileNotFoundError` naming ``what``."""
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def single_file(annotation_file: Any, name: str) -> Path:
    """The one existing annotation file of benchmark ``name`` (a list of one is accepted)."""
    paths = as_paths(annotation_file)
    if len(paths) != 1:
        raise ValueError(f"benchmark {name!r} reads one annotation file, got {len(paths)}")
    return existing_file(paths[0])


def media_file(media_dir: Path, name: str, where: str) -> str:
    """``media_dir / name`` as text; `ValueError` naming ``where`` if the name leaves the folder.

    The check is lexical (``os.path.normpath``): folders made of symlinks to the original
    datasets keep working, while ``..`` and absolute paths elsewhere are refused.

    Example:
        >>> media_file(Path("/data/coco"), "a.jpg", "refs.p: ref 3")
        '/data/coco/a.jpg'
        >>> media_file(Path("/data/coco"), "../a.jpg", "refs.p: ref 3")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: refs.p: ref 3: media name '../a.jpg' leads outside /data/coco
    """
    try:
        return str(confined_path(media_dir, name, resolve_links=False))
    except MediaError as err:
        raise ValueError(f"{where}: media name {name!r} leads outside {media_dir}") from err

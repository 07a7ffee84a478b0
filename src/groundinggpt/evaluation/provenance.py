"""What a benchmark score was computed on: the annotation files' SHA-256 and the sample count,
checked against the standard split, so that results on non-standard files are never compared
silently with published ones.

Standard counts (referring expressions per split of the refer toolkit's UNC/UMD splits, as
every REC paper reports them, e.g. MDETR, Kamath et al. 2021; POPE's current question files,
Li et al. 2023, 3,000 per category; Charades-STA test, Gao et al. 2017, 3,720 queries).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STANDARD_COUNTS: dict[tuple[str, str | None], int] = {
    ("refcoco", "val"): 10834,
    ("refcoco", "testA"): 5657,
    ("refcoco", "testB"): 5095,
    ("refcoco+", "val"): 10758,
    ("refcoco+", "testA"): 5726,
    ("refcoco+", "testB"): 4889,
    ("refcocog", "val"): 4896,
    ("refcocog", "test"): 9602,
    ("pope", "random"): 3000,
    ("pope", "popular"): 3000,
    ("pope", "adversarial"): 3000,
    ("charades_sta", "test"): 3720,
}


def _files(annotation: Any) -> list[Path]:
    paths = [annotation] if isinstance(annotation, (str, Path)) else list(annotation or [])
    out: list[Path] = []
    for p in map(Path, paths):
        out += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return out


def sha256_of_files(annotation: Any) -> str:
    """One SHA-256 over the annotation file(s) (a folder: every file in it, by name order)."""
    h = hashlib.sha256()
    for path in _files(annotation):
        h.update(path.name.encode())
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def provenance(benchmark: Mapping[str, Any], samples_read: int) -> dict[str, Any]:
    """``benchmark/*`` entries for metrics.json; warns when the count is not the standard one.

    Example:
        >>> provenance({"name": "pope", "split": "random", "annotation_file": "p.json"}, 2910)
        {'benchmark/annotation_sha256': '...', 'benchmark/samples_read': 2910.0, ...}
    """
    name, split = str(benchmark.get("name")), benchmark.get("split")
    out: dict[str, Any] = {
        "benchmark/annotation_sha256": sha256_of_files(benchmark.get("annotation_file")),
        "benchmark/samples_read": float(samples_read),
    }
    standard = STANDARD_COUNTS.get((name, split))
    if standard is not None:
        out["benchmark/standard_count"] = float(standard)
        out["benchmark/standard_split"] = float(samples_read == standard)
        if samples_read != standard:
            limited = " (benchmark.limit is set)" if benchmark.get("limit") else ""
            log.warning(
                "%s %s: %d samples read, the standard split has %d%s: these numbers are not "
                "comparable with published ones",
                name,
                split,
                samples_read,
                standard,
                limited,
            )
    return out

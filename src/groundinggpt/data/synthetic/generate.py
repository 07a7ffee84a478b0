"""Generate the deterministic synthetic grounding dataset, cached by a hash of its config.

Layout under ``root``::

    images/*.png  videos/*.mp4  audio/*.wav
    annotations/{task}_{split}.json   # JSON lists in the released GroundingGPT format
    MANIFEST.json                     # config, config hash, record counts, file digests

Each record gets its own RNG seeded by ``(seed, task, split, index)``, so the output is
byte-identical for the same config whatever the number of worker processes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from groundinggpt.data.synthetic.tasks import BUILDERS, Job, Params

GENERATOR = "groundinggpt.data.synthetic"
GENERATOR_VERSION = 1
MANIFEST = "MANIFEST.json"
SPLITS = ("train", "val", "test")
MEDIA_KEYS = ("image", "video", "sound")

DEFAULT_SIZES: dict[str, dict[str, int]] = {
    "image_caption": {"train": 600},
    "video_caption": {"train": 600},
    "audio_caption": {"train": 600},
    "rec": {"train": 2000, "val": 64, "test": 128},
    "vtg": {"train": 1500, "val": 64, "test": 128},
    "sl": {"train": 1500, "val": 64, "test": 128},
    "pope": {"train": 2000, "val": 64, "test": 128},
    "image_chat": {"train": 600},
    "video_chat": {"train": 600},
    "audio_chat": {"train": 600},
    "grounded_caption": {"train": 0},
    # pixel grounding (masks); off in the default mixture, on in experiment=stage2_fine_seg
    "res": {"train": 0, "val": 0},
    "gcg": {"train": 0},
    "avs": {"train": 0, "val": 0},
    # region input (<region> + its box); on in experiment=stage2_fine_seg
    "region_caption": {"train": 0},
    # attribute questions ("What colour is the square?"); on in the default's stage 2
    "image_qa": {"train": 0},
}
DEFAULT_CONFIG: dict[str, Any] = {
    "seed": 0,
    "sizes": DEFAULT_SIZES,
    "image_size": [64, 112],
    "side_frac": [0.25, 0.5],
    "objects": [1, 3],
    "pope_negatives": "any",
    "video_distractor": 0.5,
    "grounded_order": "left_to_right",
    "pope_answer": "short",
    "video_size": 64,
    "fps": 8,
    "video_seconds": [3.0, 6.0],
    "span_frac": [0.25, 0.6],
    "audio_seconds": [2.0, 4.0],
    "sample_rate": 16000,
}


def uniform_sizes(train: int, val: int = 0, test: int = 0) -> dict[str, dict[str, int]]:
    """Sizes with the same counts for every task: stage-2 tasks get all splits, others train."""
    sizes = {}
    for task, splits in DEFAULT_SIZES.items():
        counts = {"train": train, "val": val, "test": test}
        sizes[task] = {s: counts[s] for s in splits}
    return sizes


def _plain(value: Any) -> Any:
    """Hydra DictConfig/ListConfig (or tuples) -> plain JSON types, so hashing is stable."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or (
        isinstance(value, Iterable) and not isinstance(value, (str, bytes))
    ):
        return [_plain(v) for v in value]
    return value


def resolve_config(**cfg: Any) -> dict[str, Any]:
    """Defaults merged with ``cfg`` (``sizes`` merged per task and split), validated."""
    cfg = _plain(cfg)
    unknown = set(cfg) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"unknown synthetic-data options {sorted(unknown)}")
    resolved = copy.deepcopy(DEFAULT_CONFIG)
    sizes = resolved["sizes"]
    for task, splits in (cfg.pop("sizes", None) or {}).items():
        if task not in BUILDERS:
            raise ValueError(f"unknown synthetic task {task!r}; known: {sorted(BUILDERS)}")
        for split, n in splits.items():
            if split not in SPLITS or int(n) < 0:
                raise ValueError(f"bad size {task}.{split}={n!r}")
            sizes.setdefault(task, {})[split] = int(n)
    resolved.update(cfg)
    _validate(resolved)
    return resolved


def _validate(cfg: Mapping[str, Any]) -> None:
    lo, hi = cfg["image_size"]
    if lo < 8 or hi - lo < 8:  # a width-height gap of 8 px must be drawable
        raise ValueError(f"image_size needs 8 <= lo and hi - lo >= 8, got {cfg['image_size']}")
    lo, hi = cfg["objects"]
    if not 1 <= lo <= hi <= 3:  # sound localisation needs distinct kinds, and there are 3
        raise ValueError(f"objects needs 1 <= lo <= hi <= 3, got {cfg['objects']}")
    if cfg["pope_negatives"] not in ("any", "disjoint"):
        raise ValueError(f"pope_negatives is 'any' or 'disjoint', got {cfg['pope_negatives']!r}")
    if cfg["grounded_order"] not in ("left_to_right", "random"):
        raise ValueError(
            f"grounded_order is 'left_to_right' or 'random', got {cfg['grounded_order']!r}"
        )
    if cfg["pope_answer"] not in ("short", "echo", "describe"):
        raise ValueError(
            f"pope_answer is 'short', 'echo' or 'describe', got {cfg['pope_answer']!r}"
        )
    if not 0.0 <= float(cfg["video_distractor"]) <= 1.0:
        raise ValueError(f"video_distractor is a share in [0, 1], got {cfg['video_distractor']!r}")
    for key in ("side_frac", "span_frac"):
        a, b = cfg[key]
        if not 0 < a <= b <= 1:
            raise ValueError(f"{key} needs 0 < lo <= hi <= 1, got {cfg[key]}")
    if (
        cfg["video_seconds"][0] * cfg["fps"] < 4
        or cfg["video_seconds"][1] < cfg["video_seconds"][0]
    ):
        raise ValueError(f"video_seconds {cfg['video_seconds']} too short at {cfg['fps']} fps")
    if not 0 < cfg["audio_seconds"][0] <= cfg["audio_seconds"][1]:
        raise ValueError(f"bad audio_seconds {cfg['audio_seconds']}")


def config_hash(cfg: Mapping[str, Any]) -> str:
    text = json.dumps({"version": GENERATOR_VERSION, "config": cfg}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _params(cfg: Mapping[str, Any]) -> Params:
    names = Params.__dataclass_fields__
    return Params(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items() if k in names}
    )


def _jobs(cfg: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    return [
        (task, split, i)
        for task in BUILDERS
        for split in SPLITS
        for i in range(cfg["sizes"].get(task, {}).get(split, 0))
    ]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _build(args: tuple[str, str, int, int, Params, str]) -> tuple[dict, dict[str, str]]:
    """Worker: build one record; returns it with the sha256 of each media file it wrote."""
    task, split, index, seed, params, out = args
    task_id, split_id = list(BUILDERS).index(task), SPLITS.index(split)
    rng = np.random.default_rng([seed, task_id, split_id, index])
    record = BUILDERS[task](Job(task, split, index, rng, params, Path(out)))
    hashes = {record[k]: _sha256(Path(out) / record[k]) for k in MEDIA_KEYS if k in record}
    return record, hashes


def _run_jobs(
    jobs: list[tuple[str, str, int]],
    cfg: Mapping[str, Any],
    out: Path,
    workers: int,
    progress: bool,
) -> tuple[list[dict], dict[str, str]]:
    params = _params(cfg)
    args = [(t, s, i, int(cfg["seed"]), params, str(out)) for t, s, i in jobs]
    records, hashes = [], {}
    with ExitStack() as stack:
        if workers > 1:
            # fork: workers inherit the imports instead of re-importing torch (spawn takes seconds)
            method = "fork" if "fork" in get_all_start_methods() else "spawn"
            pool = stack.enter_context(get_context(method).Pool(workers))
            results = pool.imap(_build, args, chunksize=32)
        else:
            results = map(_build, args)
        bar = tqdm(
            results, total=len(args), desc="synthetic data", unit="rec", disable=not progress
        )
        for record, h in bar:
            records.append(record)
            hashes.update(h)
    return records, hashes


def check_splits_disjoint(
    records_by_split: Mapping[str, Iterable[dict]], content_hash: Callable[[str], str]
) -> None:
    """Raise AssertionError if two splits share a media file (by path or by content) or a
    (media, question) pair. ``content_hash`` maps a relative media path to a digest.
    """
    seen: dict[str, dict[str, str]] = {"path": {}, "content": {}, "pair": {}}
    for split, records in records_by_split.items():
        for record in records:
            paths = [record[k] for k in MEDIA_KEYS if k in record]
            digests = [content_hash(p) for p in paths]
            question = record["conversations"][0]["value"]
            keys = {"path": paths, "content": digests, "pair": ["|".join([*digests, question])]}
            for kind, values in keys.items():
                for value in values:
                    other = seen[kind].setdefault(value, split)
                    if other != split:
                        raise AssertionError(f"{kind} {value!r} is in splits {other} and {split}")


def _write_json(path: Path, obj: Any) -> str:
    text = json.dumps(obj, indent=1, sort_keys=False) + "\n"
    path.write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


def generate(out: Path, cfg: Mapping[str, Any], workers: int = 1, progress: bool = True) -> dict:
    """Write the whole dataset for a resolved ``cfg`` into ``out``; returns the manifest."""
    jobs = _jobs(cfg)
    records, hashes = _run_jobs(jobs, cfg, out, workers, progress)
    grouped: dict[tuple[str, str], list[dict]] = {}
    for (task, split, _), record in zip(jobs, records, strict=True):
        grouped.setdefault((task, split), []).append(record)
    by_split = {s: [r for (_, sp), rs in grouped.items() if sp == s for r in rs] for s in SPLITS}
    check_splits_disjoint(by_split, hashes.__getitem__)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    annotations = {}
    for task in BUILDERS:
        for split in cfg["sizes"].get(task, {}):
            chosen = grouped.get((task, split), [])
            rel = f"annotations/{task}_{split}.json"
            annotations[rel] = {"records": len(chosen), "sha256": _write_json(out / rel, chosen)}
    media_digest = hashlib.sha256("".join(f"{p}:{h}\n" for p, h in sorted(hashes.items())).encode())
    manifest = {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "config_hash": config_hash(cfg),
        "config": cfg,
        "annotations": annotations,
        "media_files": len(hashes),
        "media_sha256": media_digest.hexdigest(),
    }
    _write_json(out / MANIFEST, manifest)  # written last: its presence marks a complete dataset
    return manifest


def is_current(root: str | Path, cfg_hash: str) -> bool:
    """Whether ``root`` holds a complete dataset generated from the config with ``cfg_hash``."""
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("config_hash") != cfg_hash:
        return False
    return all((Path(root) / rel).is_file() for rel in manifest.get("annotations", {}))


def _is_synthetic(root: Path) -> bool:
    try:
        return json.loads((root / MANIFEST).read_text()).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def _swap_in(tmp: Path, root: Path, cfg_hash: str) -> None:
    """Replace ``root`` by ``tmp`` with renames, so readers never see a half-written dataset."""
    old = root.with_name(f".{root.name}.old-{os.getpid()}")
    if root.exists():
        os.replace(root, old)
    try:
        os.replace(tmp, root)
    except OSError:
        if not is_current(root, cfg_hash):  # unless another process just won the race
            raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def ensure_synthetic(
    root: str | Path, *, num_workers: int | None = None, progress: bool = True, **cfg: Any
) -> Path:
    """Generate the synthetic dataset into ``root`` unless an identical one is already there.

    Args:
        root: dataset directory; replaced if it holds a dataset made from another config.
        num_workers: generation processes (default: up to 2, the results do not depend on it).
        progress: show a tqdm bar.
        **cfg: options overriding `DEFAULT_CONFIG` (``seed``, ``sizes`` merged per task/split,
            ``image_size``, ``video_seconds``, ...).

    Returns:
        ``root`` as a Path.

    Example:
        >>> ensure_synthetic("data/synthetic", seed=0, sizes=uniform_sizes(8, 2, 2))  # doctest: +SKIP
    """
    root = Path(root)
    resolved = resolve_config(**cfg)
    cfg_hash = config_hash(resolved)
    if is_current(root, cfg_hash):
        return root
    if root.exists() and any(root.iterdir()) and not _is_synthetic(root):
        raise FileExistsError(f"{root}: not empty and not a synthetic dataset; refusing to replace")
    tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    workers = num_workers if num_workers is not None else min(2, os.cpu_count() or 1)
    try:
        generate(tmp, resolved, workers, progress)
        _swap_in(tmp, root, cfg_hash)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def load_records(path: str | Path) -> list[dict]:
    """Read annotation records from a JSON list or a JSONL file (one object per line)."""
    path = Path(path)
    text = path.read_text()
    stripped = text.lstrip()
    if stripped.startswith("["):
        records = json.loads(text)
    else:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{path}: expected a JSON list of objects or JSONL objects")
    return records

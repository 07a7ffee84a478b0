"""Read checkpoints safely: one file or a folder of shards, safetensors or ``weights_only`` pickles.

Released checkpoints come in several layouts:

- a single ``*.safetensors`` / ``*.bin`` / ``*.pth`` / ``*.pt`` file;
- a folder with ``model.safetensors.index.json`` or ``pytorch_model.bin.index.json`` (Hugging
  Face shards, ``weight_map`` names the shard of every key);
- a folder with shards but no index (all ``*.safetensors`` files, else all ``*.bin`` files);
- research checkpoints that wrap the tensors in ``{"model": ...}`` (LAVIS) or
  ``{"state_dict": ...}``.

Pickles are opened with ``torch.load(weights_only=True)`` only: a checkpoint that needs
arbitrary code to unpickle is refused with a clear error instead of being executed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_WRAPPER_KEYS = ("model", "state_dict", "module")


def read_checkpoint(
    path: str | Path, keep: Callable[[str], bool] | None = None
) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint file or sharded checkpoint folder, keyed as stored.

    Args:
        path: a checkpoint file, or a folder holding shards (with or without an index).
        keep: read only the keys it accepts (safetensors shards are then read lazily, and
            indexed shards holding none of them are skipped).

    Returns:
        ``{key: tensor}`` on the CPU, keys exactly as in the checkpoint (wrappers such as
        ``{"model": ...}`` removed).

    Raises:
        FileNotFoundError: when ``path`` does not exist or a folder holds no checkpoint.
        ValueError: on duplicated keys across shards, or on a file that is not a state dict.

    Example:
        >>> state = read_checkpoint("GroundingGPT-7B/")  # pytorch_model-0000x-of-0000y.bin
        >>> state["lm_head.weight"].shape
        torch.Size([32009, 4096])
    """
    path = Path(path)
    if path.is_file():
        return _read_file(path, keep)
    if path.is_dir():
        return _merge(shard_files(path, keep), keep)
    raise FileNotFoundError(f"checkpoint not found: {path}")


def shard_files(folder: Path, keep: Callable[[str], bool] | None = None) -> list[Path]:
    """The checkpoint files of ``folder``: from its index if present, else by suffix."""
    for name in INDEX_FILES:
        index = folder / name
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            wanted = {f for k, f in weight_map.items() if keep is None or keep(k)}
            return [folder / f for f in sorted(wanted)]
    for pattern in ("*.safetensors", *(f"*{s}" for s in PICKLE_SUFFIXES)):
        files = sorted(p for p in folder.glob(pattern) if not p.name.startswith("training_args"))
        if files:
            return files
    raise FileNotFoundError(f"{folder} holds no *.safetensors, *.bin, *.pth or *.pt checkpoint")


def _merge(files: list[Path], keep: Callable[[str], bool] | None) -> dict[str, torch.Tensor]:
    merged: dict[str, torch.Tensor] = {}
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"shard listed in the index is missing: {file}")
        shard = _read_file(file, keep)
        clash = merged.keys() & shard.keys()
        if clash:
            raise ValueError(f"{file.name} repeats {len(clash)} keys, e.g. {sorted(clash)[:3]}")
        merged.update(shard)
    log.info("read %d tensors from %d shard(s)", len(merged), len(files))
    return merged


def _read_file(path: Path, keep: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys() if keep is None or keep(k)}  # noqa: SIM118
    if path.suffix not in PICKLE_SUFFIXES:
        raise ValueError(f"{path}: unknown checkpoint type (use .safetensors, .bin, .pth, .pt)")
    state = _unwrap(load_pickle(path), path)
    return state if keep is None else {k: v for k, v in state.items() if keep(k)}


def load_pickle(path: str | Path) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU, memory-mapped when the file allows.

    The one place a pickled checkpoint is opened. ``weights_only`` refuses any pickle that
    would run code; that refusal (or a file that is no pickle at all) comes back as a
    `ValueError` naming the file.
    """
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # mmap needs the zipfile format; old pickles load without it
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{path}: not a checkpoint of tensors ({type(err).__name__}: {err})"
        ) from err


def resolve(path_or_id: str | Path, keep: Callable[[str], bool] | None = None) -> Path:
    """A local file/folder as is; anything else is taken as a Hugging Face hub repo id.

    From the hub, the index is fetched first and then only the shards holding keys that
    ``keep`` accepts (an HF BLIP-2 repo is mostly its language model, which is never needed).

    Args:
        path_or_id: local path, or hub id such as ``Salesforce/blip2-opt-2.7b``.
        keep: the keys that will be read (default: all).

    Example:
        >>> folder = resolve("Salesforce/blip2-opt-2.7b", keep=lambda k: k.startswith("qformer."))
    """
    path = Path(path_or_id)
    if path.exists():
        return path
    if str(path_or_id).startswith((".", "/", "~")) or str(path_or_id).count("/") != 1:
        raise FileNotFoundError(f"checkpoint not found: {path_or_id}")
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(str(path_or_id), allow_patterns=["*.json"]))
    if any((folder / name).is_file() for name in INDEX_FILES):
        shards = [f.name for f in shard_files(folder, keep)]
    else:
        shards = ["*.safetensors", "*.bin"]
    return Path(snapshot_download(str(path_or_id), allow_patterns=["*.json", *shards]))


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    # LAVIS saves {"model": state_dict, ...}; Lightning {"state_dict": ...}.
    while isinstance(obj, Mapping) and not _is_state_dict(obj):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not _is_state_dict(obj):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _is_state_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


__all__ = ["load_pickle", "read_checkpoint", "resolve", "save", "shard_files"]


def save(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write ``state`` as one ``.safetensors`` file (folders created) with ``metadata``.

    Tensors sharing memory (tied input/output embeddings) are written once per key: the
    second of a pair is copied, since safetensors stores no aliases.
    """
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    seen: set[int] = set()
    out = {}
    for key, value in state.items():
        ptr = value.untyped_storage().data_ptr()
        out[key] = value.clone() if ptr in seen else value.contiguous()
        seen.add(ptr)
    save_file(out, str(path), metadata=metadata or None)
    log.info("wrote %d tensors to %s", len(state), path)

"""A disk cache of frozen-encoder outputs: encode each media file once, read it back after.

Valid only when the encoder is frozen (no trainable parameter, eval mode) and the media
preprocessing is deterministic (it is here: no random augmentation). An entry is keyed by

- the encoder's fingerprint: its class, its weights (a digest of every tensor) and the
  preprocessing that feeds it (the processor's ``repr``), so changed weights or settings
  never read stale features;
- the media file's content digest (SHA-256 of its bytes), so an edited or replaced file is
  encoded again even under the same name.

Entries are safetensors files written atomically (temporary file + ``os.replace``), so any
number of DataLoader workers and ranks can share one folder: the worst case is that two
processes encode the same file once each.

Example:
    >>> cache = FeatureCache("~/.cache/groundinggpt/features", encoder_fingerprint(encoder))
    >>> cache.get("img/0001.png")  # None until put() stored it
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """SHA-256 of the file's bytes (remembered per path, size and modification time)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def describe_config(obj: Any, depth: int = 0) -> Any:
    """A stable, address-free description of a preprocessing object (for cache keys)."""
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, (list, tuple)):
        return [describe_config(v, depth + 1) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): describe_config(v, depth + 1) for k, v in sorted(obj.items())}
    if hasattr(obj, "to_dict"):
        return describe_config(obj.to_dict(), depth + 1)
    if depth < 4 and hasattr(obj, "__dict__"):
        return {"class": type(obj).__qualname__, **describe_config(vars(obj), depth + 1)}
    return type(obj).__qualname__


def encoder_fingerprint(encoder: nn.Module, preprocessing: Any = None) -> str:
    """A digest of the encoder's class, every weight and buffer, and its preprocessing (any
    object: described by `describe_config`, so no memory address enters the key)."""
    h = hashlib.sha256(f"{type(encoder).__module__}.{type(encoder).__qualname__}".encode())
    h.update(repr(describe_config(preprocessing)).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(str((tuple(tensor.shape), tensor.dtype)).encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class FeatureCache:
    """Encoder outputs per media file under ``root/<fingerprint>/<digest>.safetensors``.

    Args:
        root: the cache folder (shared by runs; one subfolder per encoder fingerprint).
        fingerprint: from `encoder_fingerprint`.
        dtype: storage dtype (``torch.bfloat16`` halves the size; float32 keeps the values
            bit-exact, so cached and uncached training give the same losses).
    """

    def __init__(self, root: str | Path, fingerprint: str, dtype: torch.dtype = torch.float32):
        self.folder = Path(root).expanduser() / fingerprint[:24]
        self.dtype = dtype
        self.hits = self.misses = 0

    def path(self, media_file: str | Path) -> Path:
        digest = file_digest(media_file)
        return self.folder / digest[:2] / f"{digest}.safetensors"

    def get(self, media_file: str | Path) -> torch.Tensor | None:
        """The cached features of ``media_file``, or None."""
        from safetensors.torch import load_file

        path = self.path(media_file)
        if not path.is_file():
            self.misses += 1
            return None
        self.hits += 1
        return load_file(str(path))["features"]

    def put(self, media_file: str | Path, features: torch.Tensor) -> None:
        """Store ``features`` for ``media_file`` (atomically)."""
        from safetensors.torch import save_file

        path = self.path(media_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            tensor = features.detach().to("cpu", self.dtype).contiguous()
            save_file({"features": tensor}, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

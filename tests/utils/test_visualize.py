"""Tests of the prediction plots: every kind of panel renders into a valid PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from groundinggpt.utils.visualize import plot_predictions

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _image(rng: np.random.Generator, h: int = 48, w: int = 48) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _samples() -> list[dict]:
    rng = np.random.default_rng(0)
    frames = [_image(rng, 24, 32) for _ in range(6)]
    return [
        {"task": "rec", "image": _image(rng), "prompt": "Where is the red circle?",
         "output": "[0.1, 0.1, 0.5, 0.6]", "reference": "[0.200, 0.100, 0.600, 0.500]"},
        {"task": "rec", "image": _image(rng), "prompt": "Where?", "output": "I do not know",
         "reference": "[0.2, 0.1, 0.6, 0.5]"},
        {"task": "sl", "image": None, "prompt": "Which object makes this sound?",
         "output": "[0.6,0.6,0.9,0.9]", "reference": "[0.5, 0.5, 1.0, 1.0]"},
        {"task": "vtg", "image": None, "frames": frames, "prompt": "When does it appear?",
         "output": "{0.10, 0.50}", "reference": "{0.20, 0.60}"},
        {"task": "vtg", "frames": np.stack(frames), "prompt": "When?", "output": "never",
         "reference": "{0.20, 0.60}"},
        {"task": "vtg", "prompt": "When?", "output": "{0.3, 0.4}", "reference": "{0.2, 0.6}"},
        {"task": "pope", "image": _image(rng), "prompt": "Is there a cat in the image?",
         "output": "Yes, there is.", "reference": "No."},
        {"task": "pope", "image": None, "prompt": "Is there a dog?", "output": "Hmm",
         "reference": "Yes."},
        {"task": "caption", "image": _image(rng)[..., 0], "prompt": "Describe the image.",
         "output": "a red circle " * 30, "reference": "a red circle"},
    ]  # fmt: skip


def test_plot_predictions_writes_a_valid_png(tmp_path: Path) -> None:
    path = plot_predictions(_samples(), tmp_path / "nested" / "preds.png")
    assert path == tmp_path / "nested" / "preds.png"
    assert path.is_file() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 100 and img.height > 100


def test_plot_predictions_single_sample(tmp_path: Path) -> None:
    sample = {"task": "vtg", "output": "{0.1, 0.5}", "reference": "{0.2, 0.6}"}
    path = plot_predictions([sample], tmp_path / "one.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_plot_predictions_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        plot_predictions([], tmp_path / "empty.png")
    bad = {"task": "rec", "image": np.zeros((4, 4, 5), np.uint8), "output": "", "reference": ""}
    with pytest.raises(ValueError, match="shape"):
        plot_predictions([bad], tmp_path / "bad.png")

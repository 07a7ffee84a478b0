"""Safe checkpoint reading: single files, wrapped pickles, shards with and without an index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from groundinggpt.convert.io import read_checkpoint

STATE = {"a.weight": torch.arange(6.0).view(2, 3), "b.bias": torch.ones(2), "c": torch.zeros(1)}


def _same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k


@pytest.mark.parametrize("name", ["m.safetensors", "m.bin", "m.pth", "m.pt"])
def test_single_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    save_file(STATE, str(path)) if name.endswith("safetensors") else torch.save(STATE, path)
    _same(read_checkpoint(path), STATE)
    _same(
        read_checkpoint(path, keep=lambda k: k != "c"),
        {k: STATE[k] for k in ("a.weight", "b.bias")},
    )


def test_lavis_wrapper_is_unwrapped(tmp_path: Path) -> None:
    torch.save({"model": STATE, "epoch": 2}, tmp_path / "blip2.pth")
    _same(read_checkpoint(tmp_path / "blip2.pth"), STATE)


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    torch.save({"model": STATE, "cfg": Path("x")}, tmp_path / "unsafe.pth")
    with pytest.raises(Exception, match="[Ww]eights only"):
        read_checkpoint(tmp_path / "unsafe.pth")


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_indexed_shards_and_keep_skips_shards(tmp_path: Path, suffix: str) -> None:
    prefix = "pytorch_model" if suffix == ".bin" else "model"
    parts = {
        f"{prefix}-00001-of-00002{suffix}": ["a.weight"],
        f"{prefix}-00002-of-00002{suffix}": ["b.bias", "c"],
    }
    for name, keys in parts.items():
        shard = {k: STATE[k] for k in keys}
        save_file(shard, str(tmp_path / name)) if suffix == ".safetensors" else torch.save(
            shard, tmp_path / name
        )
    index = {"weight_map": {k: name for name, keys in parts.items() for k in keys}}
    (tmp_path / f"{prefix}{suffix}.index.json").write_text(json.dumps(index))
    _same(read_checkpoint(tmp_path), STATE)
    (tmp_path / f"{prefix}-00002-of-00002{suffix}").unlink()  # not needed for "a.weight"
    _same(
        read_checkpoint(tmp_path, keep=lambda k: k == "a.weight"), {"a.weight": STATE["a.weight"]}
    )
    with pytest.raises(FileNotFoundError, match="shard listed in the index is missing"):
        read_checkpoint(tmp_path)


def test_unindexed_shards_and_duplicates(tmp_path: Path) -> None:
    save_file({"a.weight": STATE["a.weight"]}, str(tmp_path / "x-1.safetensors"))
    save_file({"b.bias": STATE["b.bias"]}, str(tmp_path / "x-2.safetensors"))
    _same(read_checkpoint(tmp_path), {k: STATE[k] for k in ("a.weight", "b.bias")})
    save_file({"b.bias": STATE["b.bias"]}, str(tmp_path / "x-3.safetensors"))
    with pytest.raises(ValueError, match="repeats 1 keys"):
        read_checkpoint(tmp_path)


def test_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "nope.bin")
    with pytest.raises(FileNotFoundError, match="holds no"):
        read_checkpoint(tmp_path)


def test_hub_ids_fetch_only_the_shards_that_are_read(tmp_path: Path, monkeypatch) -> None:
    import fnmatch
    import shutil

    import huggingface_hub

    from groundinggpt.convert.io import resolve

    hub = tmp_path / "hub"
    hub.mkdir()
    save_file({"qformer.w": torch.ones(1)}, str(hub / "model-00001-of-00002.safetensors"))
    save_file({"language_model.w": torch.ones(1)}, str(hub / "model-00002-of-00002.safetensors"))
    weight_map = {
        "qformer.w": "model-00001-of-00002.safetensors",
        "language_model.w": "model-00002-of-00002.safetensors",
    }
    (hub / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    local = tmp_path / "snapshot"
    local.mkdir()
    fetched: list[str] = []

    def fake_snapshot_download(repo_id: str, allow_patterns: list[str]) -> str:
        assert repo_id == "Org/blip2"
        for f in hub.iterdir():
            if any(fnmatch.fnmatch(f.name, p) for p in allow_patterns):
                shutil.copy(f, local / f.name)
                fetched.append(f.name)
        return str(local)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    keep = lambda k: k.startswith("qformer.")  # noqa: E731
    folder = resolve("Org/blip2", keep)
    assert "model-00002-of-00002.safetensors" not in fetched
    _same(read_checkpoint(folder, keep), {"qformer.w": torch.ones(1)})
    with pytest.raises(FileNotFoundError):
        resolve("./not/here")


def test_tied_weights_save_and_load_back(tmp_path) -> None:
    """Tied input/output embeddings share memory, which safetensors refuses: saved per key."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from groundinggpt.convert.io import save
    from groundinggpt.training.checkpoint import load_weights

    config = LlamaConfig(
        vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    save(model.state_dict(), tmp_path / "tied.safetensors", {})
    other = LlamaForCausalLM(config)
    load_weights(other, tmp_path / "tied.safetensors")
    torch.testing.assert_close(other.lm_head.weight, model.lm_head.weight)
    assert other.lm_head.weight.data_ptr() == other.model.embed_tokens.weight.data_ptr()

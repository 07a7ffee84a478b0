"""The frozen-encoder feature cache: same losses as encoding every time, invalidated by new
weights or an edited file, shared by DataLoader workers and by two gloo ranks."""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch
from lightning import Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import open_dict

from groundinggpt.models.feature_cache import FeatureCache, encoder_fingerprint, file_digest
from groundinggpt.train import build


class _Losses(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.decoded: list[int] = []  # media items decoded by the data pipeline, per batch
        self.read: list[int] = []  # items whose features the data pipeline read from the cache

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        self.decoded.append(sum(m.shape[0] for m in batch["media"].values()))
        cached = batch.get("cached_features", {})
        self.read.append(sum(int(hit.sum()) for _, hit in cached.values()))


def _fit(make_cfg, output, cache_dir=None, workers=0, **trainer_kwargs):
    # One pass over each grounding dataset per epoch (pinned, not the default's mixture): the
    # filling run meets every media file, and the epoch holds all three modalities.
    overrides = ["experiment=stage2_fine", "data.replay_ratio=0"]
    if cache_dir is not None:
        overrides.append(f"module.feature_cache={{dir:{cache_dir}}}")
    cfg = make_cfg(overrides, output=output)
    with open_dict(cfg):
        # replaced, not merged: a merge would keep the default's other datasets (two caption
        # passes per epoch: the same files twice)
        cfg.data.stages.stage2_fine = {"rec": 1.0, "vtg": 1.0, "sl": 1.0, "pope": 1.0}
        cfg.trainer.limit_train_batches = 8  # the whole epoch: every modality is in it
        cfg.trainer.limit_val_batches = 0
        cfg.data.num_workers = workers
    torch.manual_seed(0)
    module, dm, trainer = build(cfg)
    losses = _Losses()
    if trainer_kwargs:
        trainer = Trainer(**trainer_kwargs, callbacks=[losses], max_epochs=1, limit_train_batches=3,
                          limit_val_batches=0, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    else:
        trainer.callbacks.append(losses)
    trainer.fit(module, datamodule=dm)
    return module, losses


def _caches(module):
    return {n: b.feature_cache for n, b in module.model.branches.items() if b.feature_cache}


def test_cached_training_gives_the_same_losses(make_cfg, tmp_path) -> None:
    _, plain = _fit(make_cfg, "plain")
    cache = tmp_path / "features"
    first, filling = _fit(make_cfg, "fill", cache, workers=2)  # 2 DataLoader workers
    assert set(_caches(first)) == {"image", "video", "audio"}
    # the cache starts empty and every file comes once: all encoded, nothing found
    assert all(c.misses > 0 and c.hits == 0 for c in _caches(first).values())
    second, cached = _fit(make_cfg, "cached", cache)
    assert all(c.hits > 0 and c.misses == 0 for c in _caches(second).values())
    # The filled cache spares the data pipeline every decode: features come from the cache.
    assert sum(cached.decoded) == 0 and all(n > 0 for n in cached.read)
    assert sum(filling.read) == 0 and all(n > 0 for n in filling.decoded)
    assert cached.losses == pytest.approx(plain.losses, abs=1e-6)
    assert filling.losses == pytest.approx(plain.losses, abs=1e-6)


def test_a_batch_part_cached_part_decoded_encodes_like_a_decoded_one(make_cfg, tmp_path) -> None:
    """The first epoch meets files the cache gained meanwhile: such a batch mixes items whose
    features the workers read with decoded ones, and each must land in its own row."""
    cfg = make_cfg(["experiment=stage2_fine"], output="mixed")
    module, dm, _ = build(cfg)
    dm.setup("fit")
    model = module.model.eval()
    model.use_feature_cache(str(tmp_path / "c"))
    ds = dm.datasets["train"]["vtg"]
    samples = [ds[i] for i in range(4)]
    # Fill the cache with items 1 and 3 only, then read them back through the dataset.
    for i in (1, 3):
        path = samples[i]["media_paths"]["video"]
        model.branches["video"].encode_media(samples[i]["media"]["video"][None], [path])
    ds.encoder.read_cached_features(model.feature_caches())
    mixed = dm.collate([ds[i] for i in range(4)])
    plain = dm.collate(samples)
    hit = mixed["cached_features"]["video"][1]
    assert hit.tolist() == [False, True, False, True] and mixed["media"]["video"].shape[0] == 2
    paths = {"video": [p["video"] for p in plain["media_paths"]]}
    with torch.no_grad():
        want = model.encode(plain["media"], paths)["video"]
        got = model.encode(mixed["media"], paths, cached=mixed["cached_features"])["video"]
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_new_weights_or_an_edited_file_are_encoded_again(tmp_path) -> None:
    encoder = torch.nn.Linear(3, 2)
    media = tmp_path / "a.bin"
    media.write_bytes(b"first")
    cache = FeatureCache(tmp_path / "c", encoder_fingerprint(encoder, {"size": 64}))
    cache.put(media, torch.ones(2))
    assert torch.equal(cache.get(media), torch.ones(2))
    other_processing = FeatureCache(tmp_path / "c", encoder_fingerprint(encoder, {"size": 32}))
    assert other_processing.get(media) is None
    with torch.no_grad():
        encoder.weight[0, 0] += 1e-3
    assert (
        FeatureCache(tmp_path / "c", encoder_fingerprint(encoder, {"size": 64})).get(media) is None
    )
    before = file_digest(media)
    media.write_bytes(b"second!")  # same name, new content
    assert file_digest(media) != before and cache.get(media) is None


@pytest.mark.timeout(300)
def test_two_gloo_ranks_share_one_cache(make_cfg, tmp_path) -> None:
    cache = tmp_path / "features"
    strategy = DDPStrategy(start_method="fork", timeout=timedelta(seconds=60))
    _fit(make_cfg, "ddp", cache, accelerator="cpu", devices=2, strategy=strategy)
    entries = list(cache.rglob("*.safetensors"))
    assert entries and not list(cache.rglob("*.tmp"))  # written whole, by both ranks
    module, _ = _fit(make_cfg, "again", cache)
    assert sum(c.hits for c in _caches(module).values()) > 0

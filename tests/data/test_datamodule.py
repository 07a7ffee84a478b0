"""`data=groundinggpt` on a miniature of the released layout; resume state of the data module."""

from __future__ import annotations

from collections import Counter

import hydra
import pytest
import torch
from tests.conftest import compose_config

from groundinggpt.modalities import SPECIAL_TOKENS

MEDIA_TOKENS = {"image": 64, "video": 8, "audio": 8}  # the tiny model's

STAGES = {
    "stage1_pretrain": {"llava_pretrain", "valley_pretrain", "wavcaps"},
    "stage2_fine": {"refcoco", "visual_genome", "didemo", "charades_sta", "vggss"},
    "stage3_instruct": {
        "flickr30k_detail",
        "flickr30k_conversation",
        "activitycaptions",
        "clotho",
        "llava_instruct",
    },
}


def _datamodule(release_dir, tmp_path, stage: str, *overrides: str):
    root = release_dir["root"]
    cfg = compose_config(
        [
            f"experiment={stage}",
            "data=groundinggpt",
            f"paths.groundinggpt_dir={root / 'groundinggpt'}",
            f"paths.llava_dir={root / 'llava'}",
            f"paths.valley_dir={root / 'valley'}",
            f"paths.image_dir={root / 'images'}",
            f"paths.video_dir={root / 'videos'}",
            f"paths.audio_dir={root / 'audio'}",
            "data.num_workers=0",
            "data.batch_size=2",
            "data.processors.video.num_frames=8",
            *overrides,
        ],
        tmp_path,
        tmp_path / "out",
    )
    tokenizer = hydra.utils.instantiate(cfg.tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    dm = hydra.utils.instantiate(
        cfg.data, tokenizer=tokenizer, media_tokens=MEDIA_TOKENS, _convert_="all"
    )
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("stage", list(STAGES))
def test_groundinggpt_data_config_reads_the_release_layout(release_dir, tmp_path, stage):
    dm = _datamodule(release_dir, tmp_path, stage, "data.replay_ratio=0.3", "data.batch_size=1")
    earlier = set().union(*[STAGES[s] for s in list(STAGES)[: list(STAGES).index(stage)]])
    assert set(dm.splits["train"]) == STAGES[stage]
    assert set(dm.splits["replay"]) == earlier
    seen, skipped = Counter(), Counter()
    for batch in dm.train_dataloader():
        seen.update(batch["dataset"])
        skipped.update(batch["skipped"])
        for modality, x in batch["media"].items():
            assert torch.isfinite(x).all(), modality
    assert not skipped, skipped
    assert STAGES[stage] <= set(seen)
    assert dm.val_dataloader() == [] and dm.test_dataloader() == []


def test_real_processors_shapes(release_dir, tmp_path):
    """The data config's processors give what the 7B encoders take (CLIP 336, 64 x 224, fbank)."""
    dm = _datamodule(release_dir, tmp_path, "stage2_fine", "data.processors.video.num_frames=64")
    ds = dm.datasets["train"]
    assert ds["refcoco"][4]["media"]["image"].shape == (3, 336, 336)  # a CMYK tiff
    assert ds["didemo"][0]["media"]["video"].shape == (64, 3, 224, 224)
    assert ds["vggss"][0]["media"]["audio"].shape == (3, 1, 128, 204)


def test_state_dict_round_trip_starts_the_sampler_late(release_dir, tmp_path):
    dm = _datamodule(release_dir, tmp_path, "stage2_fine")
    assert dm.state_dict() == {}  # outside a Trainer there is no position to save
    full = list(dm.train_sampler())
    dm.load_state_dict({"epoch": 0, "consumed": 4, "total_size": len(full), "seed": 42})
    sampler = dm.train_sampler()
    sampler.set_epoch(0)
    assert list(sampler) == full[4:] and len(sampler) == len(full)


def test_a_zero_weight_leaves_a_dataset_out_and_no_replay_without_a_ratio(make_cfg):
    """An experiment narrows the merged mixture with weight 0 (experiment=stage2_fine_seg)."""
    from groundinggpt.train import build

    cfg = make_cfg(["experiment=stage2_fine", "data.stages.stage2_fine.vtg=0",
                    "data.replay_ratio=0"])  # fmt: skip
    _, dm, _ = build(cfg)
    assert "vtg" not in dm.splits["train"] and "rec" in dm.splits["train"]
    assert dm.splits["replay"] == []  # stage 1's captions are not even opened
    cfg = make_cfg(["experiment=stage2_fine", "data.stages.stage1_pretrain.video_caption=0"])
    _, dm, _ = build(cfg)
    # image captions are part of stage 2's own mixture, so only sound captions are replayed
    assert "image_caption" in dm.splits["train"]
    assert set(dm.splits["replay"]) == {"audio_caption"}

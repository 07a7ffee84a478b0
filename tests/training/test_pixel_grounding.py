"""Pixel grounding end to end on the tiny model: [SEG] tokens -> masks, in order, with losses
that train the mask decoder and the LLM, and validation that scores masks in original pixels."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning import Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import open_dict
from tests.conftest import compose_config

from groundinggpt.data.segmentation import SegmentationProcessor
from groundinggpt.grounding.masks import encode_mask
from groundinggpt.models.pixel_decoder import seg_positions
from groundinggpt.train import build
from groundinggpt.training.segmentation import mask_baselines, mean_mask


@pytest.fixture(scope="module")
def seg_data_dir(tmp_path_factory):
    """Where the tests' tiny pixel-grounding dataset is generated (once per module)."""
    return tmp_path_factory.mktemp("seg") / "data"


@pytest.fixture()
def seg_cfg(make_cfg, seg_data_dir):
    """experiment=stage2_fine_seg on 8 referring-segmentation, 4 grounded-caption records."""
    cfg = make_cfg(["experiment=stage2_fine_seg"])
    with open_dict(cfg):
        cfg.data.root = str(seg_data_dir)
        sizes = compose_config(["experiment=stage2_fine_seg"], seg_data_dir, seg_data_dir)
        cfg.data.synthetic.sizes = sizes.data.synthetic.sizes  # every other task at 0
        cfg.data.synthetic.sizes.res = {"train": 8, "val": 4}
        cfg.data.synthetic.sizes.gcg = {"train": 4}
        cfg.data.synthetic.sizes.region_caption = {"train": 4}
    return cfg


def test_seg_positions_mark_the_token_before_each_seg():
    ids = torch.tensor([[1, 5, 9, 5, 9, 2]])
    assert seg_positions(ids, 9).tolist() == [[False, True, False, True, False, False]]


def test_three_seg_tokens_give_three_masks_in_answer_order(seg_cfg):
    module, _, _ = build(seg_cfg)
    model = module.model.eval()
    seg = model.seg_token_id
    ids = torch.tensor([[1, 40, seg, 41, seg, 42, seg, 2]])
    hidden = torch.randn(1, ids.shape[1], model.llm.config.hidden_size)
    pixels = torch.randn(1, 3, 64, 64)
    (masks,) = model.predict_masks(hidden, ids, pixels, [3])
    assert masks.shape == (3, 64, 64)
    # mask k is the decoder's answer to the hidden state right before the k-th [SEG]
    embedding = model.pixel_decoder.embed_images(pixels)
    for k, pos in enumerate([1, 3, 5]):
        (alone,) = model.pixel_decoder(embedding, [hidden[0, pos : pos + 1]])
        torch.testing.assert_close(masks[k], alone[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(masks[0], masks[1])
    with pytest.raises(ValueError, match="3 \\[SEG\\] tokens"):
        model.predict_masks(hidden, ids, pixels, [2])


def _record(tmp_path, masks, answer="It is [SEG]."):
    from PIL import Image

    img = np.full((30, 50, 3), 200, dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    convs = [
        {"from": "human", "value": "<image>\nPlease segment the dot."},
        {"from": "gpt", "value": answer},
    ]
    return {"id": "r0", "task": "res", "image": "a.png", "conversations": convs, "masks": masks}


def test_dataset_gives_sam_frame_masks_and_skips_a_count_mismatch(seg_cfg, tmp_path):
    module, dm, _ = build(seg_cfg)
    dm.setup()
    ds = next(iter(dm.datasets["train"].values()))
    mask = np.zeros((30, 50), dtype=bool)
    mask[10:20, 5:25] = True
    records = [
        _record(tmp_path, [encode_mask(mask)]),
        _record(tmp_path, [encode_mask(mask)], answer="It is [SEG] and [SEG]."),
        _record(tmp_path, []),
    ]
    from groundinggpt.data.dataset import ConversationDataset

    check = ConversationDataset(
        records, tmp_path, ds.formatter, ds.processors, 128, name="t", task="res"
    )
    sample = check[0]
    seg = sample["segment"]
    assert seg["pixels"].shape == (3, 64, 64) and seg["size"] == (30, 50)
    # 50 px wide -> 64 (x1.28): rows 10..20 of 30 -> ~13..26 of the 38 valid rows
    assert seg["masks"].shape == (1, 64, 64)
    assert seg["masks"][0, 18, 20] and not seg["masks"][0, 40, 20]  # padding rows are empty
    assert abs(int(seg["masks"].sum()) - 10 * 20 * (64 / 50) ** 2) < 40
    assert check[1]["skipped"] == "mask_count_mismatch"
    assert check[2]["skipped"] == "mask_count_mismatch"


def test_a_training_step_trains_the_mask_decoder_and_the_llm(seg_cfg):
    module, dm, _ = build(seg_cfg)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert "seg_pixels" in batch and sum(batch["seg_counts"]) >= batch["seg_pixels"].shape[0]
    logged = {}
    module.log = lambda k, v, **kw: logged.__setitem__(k, v)
    module.log_dict = lambda d, **kw: logged.update(d)
    loss = module.training_step(batch, 0)
    loss.backward()
    assert float(logged["train/mask_bce"]) > 0 and float(logged["train/mask_dice"]) > 0
    decoder = module.model.pixel_decoder
    grads = [p.grad for p in decoder.sam.mask_decoder.upscale_conv1.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert decoder.seg_projection[0].weight.grad.abs().sum() > 0
    # the mask loss reaches the LLM through the hidden state before [SEG]
    assert module.model.llm.model.layers[-1].mlp.down_proj.weight.grad.abs().sum() > 0
    # the toy trains SAM's image encoder too (no pretrained SAM; trainable.pixel_encoder=full)
    assert decoder.sam.vision_encoder.patch_embed.projection.weight.grad.abs().sum() > 0


def test_packed_rows_keep_each_mask_with_its_sample(seg_cfg):
    module, dm, _ = build(seg_cfg)
    dm.setup()
    samples = [dm.datasets["train"]["gcg"][i] for i in range(3)]
    plain = dm.collate(samples)
    dm.train_collate.pack_length = 1024
    packed = dm.train_collate(samples)
    assert packed["input_ids"].shape[0] == 1  # all in one row
    by_id = dict(zip(plain["id"], plain["seg_counts"], strict=True))
    owners = [packed["id"][i] for i in packed["seg_owner"]]
    assert [by_id[i] for i in owners] == packed["seg_counts"]
    seg_id = module.model.seg_token_id
    assert int((packed["input_ids"] == seg_id).sum()) == sum(packed["seg_counts"])


def test_validation_scores_generated_masks_and_a_miss(seg_cfg):
    module, dm, _ = build(seg_cfg)
    dm.setup()
    module.eval()
    batch = next(iter(dm.val_dataloader()))
    from groundinggpt.training.segmentation import answer_masks

    n = len(batch["seg_owner"])
    seg, pad = module.model.seg_token_id, module.tokenizer.pad_token_id
    tokens = torch.full((batch["size"], 3), pad)
    tokens[batch["seg_owner"][0], 0] = seg  # one answer writes [SEG], the others nothing
    masks = answer_masks(module.model, batch, tokens, pad)
    assert len(masks) == n
    h, w = batch["seg_sizes"][0]
    assert masks[0].shape == (1, h, w) and masks[0].dtype == torch.bool
    assert all(m.shape[0] == 0 for m in masks[1:])


def test_mean_mask_baseline_against_hand_counts():
    a = np.zeros((4, 4), dtype=bool)
    a[:2, :2] = True  # top-left quarter
    b = np.zeros((4, 4), dtype=bool)
    b[:2, :] = True  # top half
    avg = mean_mask([a, b], grid=4)
    # mean area 6 pixels: the 4 top-left pixels (covered twice) + 2 of the top-right ones
    assert avg.sum() == 6 and avg[:2, :2].all()
    base = mask_baselines({"res": [a, b]}, {"res": [b]}, grid=4)
    # whole image: 8 / 16; mean mask: 6 of 6 inside the 8-pixel target -> 6 / 8
    assert base["res/whole_image/ciou"] == pytest.approx(0.5)
    assert base["res/mean_mask/ciou"] == pytest.approx(0.75)
    assert base["res/ciou"] == pytest.approx(0.75)


def test_segmentation_processor_rejects_an_empty_mask(tmp_path):
    from PIL import Image

    from groundinggpt.data.records import SampleError

    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "z.png")
    with pytest.raises(SampleError, match="covers no pixel"):
        SegmentationProcessor(size=16)(tmp_path / "z.png", [encode_mask(np.zeros((8, 8), bool))])


@pytest.mark.timeout(300)
def test_train_py_writes_mask_metrics_and_baselines(seg_cfg, tmp_path):
    from groundinggpt.train import train

    with open_dict(seg_cfg):
        seg_cfg.trainer.limit_val_batches = 1
    train(seg_cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["val/res/count"] == 4
    for key in ("val/res/ciou", "val/res/giou", "baseline/val/res/ciou"):
        assert 0 <= metrics[key] <= 1
    assert "baseline/val/res/whole_image/ciou" in metrics


class _Weights(Callback):
    def __init__(self, out: Path) -> None:
        self.out = out
        self.segmented: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.segmented.append("seg_pixels" in batch)

    def on_fit_end(self, trainer, pl_module):
        flat = torch.cat([p.detach().flatten() for p in pl_module.model.parameters()])
        torch.save(flat, self.out / f"w{trainer.global_rank}.pt")
        (self.out / f"seg{trainer.global_rank}.json").write_text(json.dumps(self.segmented))


@pytest.mark.timeout(300)
def test_two_gloo_ranks_stay_in_step_when_only_some_batches_have_masks(seg_cfg, tmp_path):
    """Plain DDP: a batch without masks still puts the pixel decoder in the graph."""
    with open_dict(seg_cfg):
        seg_cfg.data.batch_size = 2
        seg_cfg.data.stages.stage2_fine.region_caption = 2.0  # batches without masks
    module, dm, _ = build(seg_cfg)
    log = _Weights(tmp_path)
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(start_method="fork", timeout=timedelta(seconds=60)),
        max_steps=6,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[log],
    )
    trainer.fit(module, datamodule=dm)
    flags = [json.loads((tmp_path / f"seg{r}.json").read_text()) for r in range(2)]
    steps = list(zip(*flags, strict=True))
    assert any(not all(s) for s in steps), steps  # some rank had a batch without masks
    w0, w1 = (torch.load(tmp_path / f"w{r}.pt") for r in range(2))
    assert torch.equal(w0, w1)

"""Region input: a ``<region>`` in a prompt becomes one embedding of its box, read from the
right window of multi-level CLIP features, in order, through packing, training and generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import open_dict
from tests.conftest import compose_config, shrink
from torchvision.ops import roi_align

from groundinggpt.data.dataset import ConversationDataset
from groundinggpt.grounding.geometry import box_to_padded
from groundinggpt.models.generation import generate_tokens, prompt_features
from groundinggpt.models.region_encoder import (
    GLAMM_NAMES,
    MultiLevelFuse,
    RegionEncoder,
    coordinate_channels,
    pool_regions,
    resize,
)
from groundinggpt.train import build


def _one_patch(side: int, row: int, col: int, cell: int = 1) -> torch.Tensor:
    """A ``(1, 1, side * cell, side * cell)`` map: 1 on patch ``(row, col)``, 0 elsewhere."""
    fmap = torch.zeros(1, 1, side * cell, side * cell)
    fmap[0, 0, row * cell : (row + 1) * cell, col * cell : (col + 1) * cell] = 1.0
    return fmap


def _patch_box(side: int, row: int, col: int) -> torch.Tensor:
    """The box of patch ``(row, col)`` of a ``side x side`` grid, in fractions of the square."""
    return torch.tensor([[col / side, row / side, (col + 1) / side, (row + 1) / side]])


def test_a_box_reads_its_own_window_on_every_level():
    # 336 px, 14 px patches: a 24 x 24 grid, and the same image upsampled 2x (as level -5)
    side, row, col = 24, 20, 22
    maps = [_one_patch(side, row, col, cell=2), _one_patch(side, row, col)]
    on = pool_regions(maps, [_patch_box(side, row, col)], roi_size=14)
    assert on.shape == (2, 1, 1, 14, 14)
    assert (on > 0).all()  # every sample of the box lies within half a patch of the patch
    for drow, dcol in [(0, 2), (2, 0), (-2, -2)]:  # two patches away: nothing of it
        off = pool_regions(maps, [_patch_box(side, row + drow, col + dcol)], roi_size=14)
        assert off.abs().max() == 0
    # = RoIAlign of the box in pixels of the 336-px square with spatial_scale G / S
    rois = torch.cat([torch.zeros(1, 1), _patch_box(side, row, col) * 336], dim=1)
    for level, fmap in enumerate(maps):
        scale = fmap.shape[-1] / 336
        direct = roi_align(fmap, rois, 14, spatial_scale=scale, sampling_ratio=2, aligned=True)
        torch.testing.assert_close(direct, on[level])
    # GLaMM's 224-for-336 scale puts the box at two thirds of the grid: it misses the patch
    assert pool_regions(maps, [_patch_box(side, row, col) * 224 / 336], 14).abs().max() == 0


def test_boxes_follow_their_images():
    maps = [torch.cat([_one_patch(4, 0, 0), _one_patch(4, 3, 3)])]  # image 0 top-left, 1 b-r
    top_left, bottom_right = _patch_box(4, 0, 0), _patch_box(4, 3, 3)
    pooled = pool_regions(maps, [torch.cat([top_left, bottom_right]), bottom_right], 2)
    assert pooled[0, :, 0].flatten(1).amax(1).gt(0).tolist() == [True, False, True]


def test_projecting_before_upsampling_equals_glamm_order():
    torch.manual_seed(0)
    fuse = MultiLevelFuse(in_dim=6, width=8, num_levels=3, num_fuse=0, groups=2)
    grids = [torch.randn(2, 6, 5, 5) for _ in range(3)]
    ours = fuse(grids)
    for i, (grid, conv) in enumerate(zip(grids, fuse.input_conv, strict=True)):
        big = resize(grid, (5 * 2 ** (2 - i), 5 * 2 ** (2 - i)))  # GLaMM: upsample first
        torch.testing.assert_close(ours[i], conv(coordinate_channels(big)), atol=1e-5, rtol=1e-5)


def _glamm_shapes(c: int = 1024, e: int = 1024, llm: int = 4096) -> dict[str, tuple]:
    """GLaMM's region-encoder parameter shapes (groundingLMM model/layers.py, 4 levels)."""
    shapes = {}
    for i in range(4):
        shapes[f"mlvl_fuse.input_conv.{i}.weight"] = (e, c + 2, 1, 1)
        shapes[f"mlvl_fuse.input_conv.{i}.bias"] = (e,)
        shapes[f"roi_align.pconvs.{i}.weight"] = (e, e, 3, 3)
        shapes[f"roi_align.pconvs.{i}.bias"] = (e,)
    for j in range(5):
        shapes[f"mlvl_fuse.fuse_convs.{j}.conv.weight"] = (e, e, 3, 3)
        shapes[f"mlvl_fuse.fuse_convs.{j}.gn.weight"] = (e,)
        shapes[f"mlvl_fuse.fuse_convs.{j}.gn.bias"] = (e,)
    for k, n in [(0, 256), (2, 256), (3, 1024), (5, 1024)]:
        shapes[f"roi_align.pos_embedd.{k}.bias"] = (n,)
    shapes |= {"roi_align.pos_embedd.0.weight": (256, 4), "roi_align.pos_embedd.2.weight": (256,)}
    shapes |= {
        "roi_align.pos_embedd.3.weight": (1024, 256),
        "roi_align.pos_embedd.5.weight": (1024,),
    }
    shapes |= {"roi_align.flatten_linear.weight": (1024, e * 14 * 14)}
    shapes |= {"roi_align.flatten_linear.bias": (1024,), "roi_align.updims.bias": (llm,)}
    shapes |= {"roi_align.updims.weight": (llm, 1024)}
    return shapes


def _rename(key: str) -> str:
    (prefix,) = [p for p in GLAMM_NAMES if key.startswith(p)]
    return GLAMM_NAMES[prefix] + key[len(prefix) :]


def test_glamm_keys_map_onto_the_vit_l_336_encoder_by_renaming():
    with torch.device("meta"):  # 200 M parameters in roi_proj: shapes only
        enc = RegionEncoder(in_dim=1024, llm_width=4096)
    ours = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    mapped = {_rename(k): shape for k, shape in _glamm_shapes().items()}
    assert mapped == ours


# ----------------------------------------------------------------------- the tiny seg model


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """experiment=stage2_fine_seg (tiny, with the region encoder) on a few records, set up."""
    root = tmp_path_factory.mktemp("region")
    cfg = shrink(compose_config(["experiment=stage2_fine_seg"], root, root / "run"), root / "data")
    sizes = compose_config(["experiment=stage2_fine_seg"], root, root).data.synthetic.sizes
    with open_dict(cfg):
        cfg.data.synthetic.sizes = sizes
        cfg.data.synthetic.sizes.res = {"train": 4, "val": 2}
        cfg.data.synthetic.sizes.gcg = {"train": 2}
        cfg.data.synthetic.sizes.region_caption = {"train": 6}
    module, dm, _ = build(cfg)
    dm.setup()
    return module, dm


def _region_records(tmp_path, turns, regions, size=(50, 30)):
    from PIL import Image

    Image.fromarray(np.full((size[1], size[0], 3), 90, dtype=np.uint8)).save(tmp_path / "a.png")
    convs = []
    for question, answer in turns:
        convs += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    record = {"id": "q", "task": "caption", "image": "a.png", "conversations": convs}
    return record if regions is None else {**record, "regions": regions}


def _dataset(dm, records, tmp_path):
    ds = dm.datasets["train"]["region_caption"]
    return ConversationDataset(records, tmp_path, ds.formatter, ds.processors, 256, name="t")


def test_region_tokens_land_at_their_placeholders_in_order(built, tmp_path):
    module, dm = built
    model = module.model.eval()
    boxes = [[5, 2, 20, 12], [30, 10, 50, 30]]
    record = _region_records(
        tmp_path, [("<image>\nWhat is in <region> and <region>?", "red.")], boxes
    )
    sample = _dataset(dm, [record], tmp_path)[0]
    expected = torch.tensor([box_to_padded(b, 50, 30) for b in boxes])
    torch.testing.assert_close(sample["regions"], expected)
    assert sample["prompt_regions"] == 2
    batch = dm.collate([sample])
    with torch.no_grad():
        features = model.encode(batch["media"], region_boxes=[expected], region_images=[0])
        embeds = model.splice(batch["input_ids"], features)
        alone = [model.encode_regions(batch["media"]["image"], [b[None]]) for b in expected]
    ids = batch["input_ids"][0]
    where = (ids == model.region_token_id).nonzero().flatten().tolist()
    assert len(where) == 2
    for pos, emb in zip(where, alone, strict=True):  # first box at the first <region>
        torch.testing.assert_close(embeds[0, pos], emb[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(alone[0], alone[1])
    plain = model.llm.get_input_embeddings()(batch["input_ids"])
    text = (ids != model.region_token_id) & (ids != model.patch_token_ids["image"])
    torch.testing.assert_close(embeds[0, text], plain[0, text])


def test_a_wrong_region_count_is_skipped_with_its_reason(built, tmp_path):
    _, dm = built
    one = [("<image>\nWhat is in <region>?", "red.")]
    records = [
        _region_records(tmp_path, one, [[0, 0, 10, 10], [1, 1, 5, 5]]),  # 1 token, 2 boxes
        _region_records(tmp_path, one, None),  # a token, no boxes
        _region_records(tmp_path, [("<image>\nWhat is it?", "red.")], [[0, 0, 10, 10]]),
        _region_records(tmp_path, one, [[0, 0, 60, 10]]),  # beyond the 50 px width
        _region_records(tmp_path, one, [[0, 0, 10, 10]]),
    ]
    ds = _dataset(dm, records, tmp_path)
    reasons = [ds[i].get("skipped") for i in range(len(records))]
    assert reasons[:3] == ["region_count_mismatch"] * 3
    assert reasons[3] == "region_malformed"
    assert reasons[4] is None


def test_packed_rows_keep_each_region_with_its_sample(built):
    module, dm = built
    regions = dm.datasets["train"]["region_caption"]
    samples = [dm.datasets["train"]["res"][0], regions[0], regions[1], regions[2]]
    dm.train_collate.pack_length = 1024
    try:
        packed = dm.train_collate(samples)
    finally:
        dm.train_collate.pack_length = None
    assert packed["input_ids"].shape[0] == 1  # all in one row
    # the k-th <region> of the row (row-major) lies in the sample that owns the k-th box
    tokens = packed["input_ids"] == module.model.region_token_id
    token_samples = packed["sequence_ids"][tokens].tolist()
    owners = [
        o for o, b in zip(packed["region_owner"], packed["region_boxes"], strict=True) for _ in b
    ]
    assert token_samples == owners and len(owners) == 3
    by_id = {s["id"]: s for s in samples}
    for owner, boxes, image in zip(
        packed["region_owner"], packed["region_boxes"], packed["region_images"], strict=True
    ):
        original = by_id[packed["id"][owner]]
        assert torch.equal(boxes, original["regions"])
        assert torch.equal(packed["media"]["image"][image], original["media"]["image"])


def test_a_training_step_trains_the_region_encoder(built):
    module, dm = built
    module.train()
    module.zero_grad()
    ds = dm.datasets["train"]["region_caption"]
    batch = dm.collate([ds[0], ds[1], dm.datasets["train"]["res"][0]])
    assert len(batch["region_boxes"]) == 2
    module.log = module.log_dict = lambda *a, **kw: None
    module.training_step(batch, 0).backward()
    enc = module.model.region_encoder
    for p in (enc.out_proj.weight, enc.roi_proj.weight, enc.fuse.input_conv[0].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in module.model.branches["image"].encoder.parameters())
    module.zero_grad()


def test_generation_sees_only_the_regions_of_its_prompt(built, tmp_path):
    module, dm = built
    model = module.model.eval()
    turns = [("<image>\nWhat is in <region>?", "red."), ("And in <region>?", "blue.")]
    record = _region_records(tmp_path, turns, [[5, 2, 20, 12], [30, 10, 50, 30]])
    batch = dm.collate([_dataset(dm, [record], tmp_path)[0]])
    assert batch["region_in_prompt"].tolist() == [True, False]
    with torch.no_grad():
        features = model.encode(
            batch["media"], region_boxes=batch["region_boxes"], region_images=[0]
        )
        kept = prompt_features(model, batch, features)["region"]
        torch.testing.assert_close(kept, features["region"][:1])
        tokens = generate_tokens(model, module.tokenizer, batch, {"max_new_tokens": 2})
    assert tokens.shape[0] == 1
    module._count_skipped = lambda b: None
    module.log = lambda *a, **kw: None
    module.validation_step(batch, 0)  # teacher-forced loss with both, generation with one

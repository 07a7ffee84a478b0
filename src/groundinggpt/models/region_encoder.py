"""Region input (GLaMM / GPT4RoI): a box on the image becomes one LLM embedding.

A ``<region>`` placeholder in a prompt stands for one box of the record's image. The region
encoder reads the patch features of several CLIP layers (ViT-L/14-336: layers -11, -8, -5,
-2, each a 24 x 24 grid), and for each box:

1. per level, adds two coordinate channels (x, y in [-1, 1]) and projects to a common
   ``width`` with a 1x1 conv; level ``i`` of ``L`` is then upsampled (bilinear) to
   ``2 ** (L - 1 - i)`` times the patch grid, so the first (shallowest) layer is the finest;
2. fuses the levels ``num_fuse`` times: each level keeps half its channels, takes a quarter
   from the next coarser and a quarter from the next finer level, then a shared 3x3 conv,
   GroupNorm and ReLU;
3. pools every box on every level with RoIAlign (``roi_size`` x ``roi_size``), convolves
   each level's pooled map (3x3), sums the levels, applies ReLU and flattens;
4. projects to ``hidden`` (``roi_proj``), adds an embedding of the box coordinates
   (``box_embed``) and projects to the LLM width (``out_proj``).

**Feature-map scale.** Boxes are fractions in [0, 1] of the padded square the CLIP encoder
sees (side ``S`` px). On a feature grid of side ``G`` (the patch grid ``S / patch_size`` or
an upsampled level) a box covers ``G * box`` cells: RoIAlign runs with the boxes multiplied
by ``G`` (``spatial_scale = G / S`` for boxes in pixels of the padded square). GLaMM's code
multiplies its box fractions by 224 while its features come from 336-px inputs, which reads
the wrong window (the top-left two thirds of the image); this module does not.

Step 1 projects before it upsamples, GLaMM after: both are linear and the upsampled
coordinate channels are exactly the coordinates of the finer grid (bilinear,
``align_corners=True``), so the result is the same at a fraction of the cost.

Parameter names follow GLaMM's ``MLVLROIQueryModule`` (groundingLMM ``model/layers.py``) up
to the renames in `GLAMM_NAMES`, so its weights load by renaming keys.

Example:
    >>> enc = RegionEncoder(in_dim=64, llm_width=128, layers=(-4, -3, -2), width=32,
    ...                     hidden=64, box_width=32, roi_size=7, num_fuse=2, groups=8)
    >>> levels = [torch.randn(2, 16, 64) for _ in range(3)]  # (M, G * G, C) per CLIP layer
    >>> boxes = [torch.tensor([[0.1, 0.2, 0.5, 0.9]]), torch.tensor([[0.0, 0.0, 1.0, 1.0]])]
    >>> enc(levels, boxes).shape  # one embedding per box, image by image
    torch.Size([2, 128])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

# GLaMM key (under ``model.region_encoder.``) -> ours (under ``region_encoder.``): prefixes.
GLAMM_NAMES = {
    "mlvl_fuse.input_conv.": "fuse.input_conv.",
    "mlvl_fuse.fuse_convs.": "fuse.fuse_convs.",
    "roi_align.pconvs.": "level_convs.",
    "roi_align.pos_embedd.": "box_embed.",
    "roi_align.flatten_linear.": "roi_proj.",
    "roi_align.updims.": "out_proj.",
}


class FuseBlock(nn.Module):
    """3x3 conv (no bias) + GroupNorm + ReLU (GLaMM's ``ConvModule``: ``conv``, ``gn``).

    Example:
        >>> FuseBlock(32, groups=8)(torch.zeros(1, 32, 4, 4)).shape
        torch.Size([1, 32, 4, 4])
    """

    def __init__(self, width: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.gn = nn.GroupNorm(groups, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.gn(self.conv(x)))


def coordinate_channels(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C + 2, H, W)`` with x then y in [-1, 1] appended.

    Example:
        >>> coordinate_channels(torch.zeros(1, 1, 2, 3))[0, 1:]
        tensor([[[-1.,  0.,  1.],
                 [-1.,  0.,  1.]],
        <BLANKLINE>
                [[-1., -1., -1.],
                 [ 1.,  1.,  1.]]])
    """
    b, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    coords = torch.stack([grid_x, grid_y]).expand(b, 2, h, w)
    return torch.cat([x, coords], dim=1)


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True`` (GLaMM's), a no-op at the same size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


class MultiLevelFuse(nn.Module):
    """Project each level to ``width``, upsample it, and exchange channels between levels.

    Args:
        in_dim: CLIP width.
        width: common width of the levels.
        num_levels: CLIP layers read.
        num_fuse: fuse rounds (each a shared `FuseBlock`).
        groups: GroupNorm groups.
    """

    def __init__(self, in_dim: int, width: int, num_levels: int, num_fuse: int, groups: int):
        super().__init__()
        self.input_conv = nn.ModuleList(nn.Conv2d(in_dim + 2, width, 1) for _ in range(num_levels))
        self.fuse_convs = nn.ModuleList(FuseBlock(width, groups) for _ in range(num_fuse))
        self.share = width // 4  # channels taken from each neighbouring level
        self.keep = width - 2 * self.share

    def forward(self, grids: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``L`` maps ``(M, C, G, G)`` -> ``L`` maps ``(M, width, G_i, G_i)``, finest first."""
        n = len(grids)
        maps = []
        for i, (grid, conv) in enumerate(zip(grids, self.input_conv, strict=True)):
            scale = 2 ** (n - 1 - i)
            size = (grid.shape[-2] * scale, grid.shape[-1] * scale)
            maps.append(resize(conv(coordinate_channels(grid)), size))
        for block in self.fuse_convs:
            maps = [block(self._exchange(maps, i)) for i in range(n)]
        return maps

    def _exchange(self, maps: Sequence[torch.Tensor], i: int) -> torch.Tensor:
        """Level ``i``'s first channels + a quarter of its coarser and finer neighbours."""
        target = maps[i]
        coarser, finer = maps[min(i + 1, len(maps) - 1)], maps[max(i - 1, 0)]
        size = target.shape[-2:]
        from_coarser = resize(coarser[:, self.keep + self.share :], size)
        from_finer = resize(finer[:, self.keep : self.keep + self.share], size)
        return torch.cat([target[:, : self.keep], from_coarser, from_finer], dim=1)


def to_grids(levels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Patch tokens ``(M, G * G, C)`` (row-major, CLS dropped) -> maps ``(M, C, G, G)``.

    Example:
        >>> to_grids([torch.zeros(2, 9, 5)])[0].shape
        torch.Size([2, 5, 3, 3])
    """
    grids = []
    for tokens in levels:
        m, n, c = tokens.shape
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"{n} patch tokens do not form a square grid")
        grids.append(tokens.reshape(m, side, side, c).permute(0, 3, 1, 2))
    return grids


def pool_regions(
    maps: Sequence[torch.Tensor],
    boxes: Sequence[torch.Tensor],
    roi_size: int,
    sampling_ratio: int = 2,
) -> torch.Tensor:
    """RoIAlign of every box on every level: ``(L, K, C, roi_size, roi_size)``.

    Args:
        maps: ``L`` feature maps ``(M, C, H_l, W_l)`` of the same ``M`` images.
        boxes: per image ``(n_i, 4)`` boxes ``(x0, y0, x1, y1)`` in [0, 1] fractions of the
            padded square; ``K = sum(n_i)``, image by image.
        roi_size: output side per box.
        sampling_ratio: bilinear samples per output cell side.

    On a map of ``H x W`` cells a box covers ``(x * W, y * H)``: the scale is the map's own
    grid, whatever the input image size (see the module docstring).

    Example:
        >>> fmap = torch.zeros(1, 1, 4, 4); fmap[0, 0, 1, 2] = 1.0  # the patch at row 1, col 2
        >>> pool_regions([fmap], [torch.tensor([[0.5, 0.25, 0.75, 0.5]])], 2).amin() > 0
        tensor(True)
    """
    if len(boxes) != maps[0].shape[0]:
        raise ValueError(f"{len(boxes)} box groups for {maps[0].shape[0]} images")
    rois = torch.cat(
        [torch.cat([b.new_full((b.shape[0], 1), i), b], dim=1) for i, b in enumerate(boxes)]
    ).float()
    pooled = []
    for fmap in maps:
        h, w = fmap.shape[-2:]
        scale = rois.new_tensor([1.0, w, h, w, h])
        out = roi_align(fmap.float(), rois * scale, roi_size, 1.0, sampling_ratio, aligned=True)
        pooled.append(out.to(fmap.dtype))
    return torch.stack(pooled)


class RegionEncoder(nn.Module):
    """Multi-level CLIP features + boxes -> one LLM embedding per box (GLaMM's region encoder).

    Args:
        in_dim: CLIP width (the image encoder's ``out_dim``).
        llm_width: the LLM's hidden size.
        layers: CLIP hidden-state indices read, finest level first (GLaMM: -11, -8, -5, -2).
        width: common width of the levels (GLaMM: 1024).
        hidden: width before the last projection (GLaMM: 1024).
        box_width: hidden width of the box-coordinate embedding (GLaMM: 256).
        roi_size: RoIAlign output side (GLaMM: 14).
        sampling_ratio: RoIAlign samples per cell side (GLaMM: 2).
        num_fuse: level-fusion rounds (GLaMM: 5).
        groups: GroupNorm groups of the fusion (GLaMM: 64).

    Attributes:
        layers: as given (`GroundingGPT` asks the image encoder for them).
    """

    def __init__(
        self,
        in_dim: int,
        llm_width: int,
        layers: Sequence[int] = (-11, -8, -5, -2),
        width: int = 1024,
        hidden: int = 1024,
        box_width: int = 256,
        roi_size: int = 14,
        sampling_ratio: int = 2,
        num_fuse: int = 5,
        groups: int = 64,
    ) -> None:
        super().__init__()
        self.layers = [int(i) for i in layers]
        self.roi_size, self.sampling_ratio = int(roi_size), int(sampling_ratio)
        self.fuse = MultiLevelFuse(in_dim, width, len(self.layers), num_fuse, groups)
        self.level_convs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in self.layers)
        self.box_embed = nn.Sequential(
            nn.Linear(4, box_width),
            nn.ReLU(),
            nn.LayerNorm(box_width),
            nn.Linear(box_width, hidden),
            nn.ReLU(),
            nn.LayerNorm(hidden),
        )
        self.roi_proj = nn.Linear(width * self.roi_size**2, hidden)
        self.out_proj = nn.Linear(hidden, llm_width)
        for conv in self.level_convs:  # GLaMM's init of these convs
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(
        self, levels: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """``len(layers)`` tensors ``(M, G * G, C)`` and per image ``(n_i, 4)`` boxes -> ``(K, D)``.

        The embeddings come image by image, box by box (``K = sum(n_i)``).
        """
        if len(levels) != len(self.layers):
            raise ValueError(f"{len(levels)} feature levels for layers {self.layers}")
        dtype = self.out_proj.weight.dtype
        boxes = [b.to(device=levels[0].device, dtype=dtype) for b in boxes]
        maps = self.fuse([g.to(dtype) for g in to_grids(levels)])
        pooled = pool_regions(maps, boxes, self.roi_size, self.sampling_ratio)
        x = F.relu(sum(conv(p) for conv, p in zip(self.level_convs, pooled, strict=True)))
        x = self.roi_proj(x.flatten(1)) + self.box_embed(torch.cat(boxes))
        return self.out_proj(x)


__all__ = ["GLAMM_NAMES", "RegionEncoder", "pool_regions", "to_grids"]

"""Multi-scale features from any image backbone, for torchvision's detectors.

Hierarchical backbones (ResNet, ConvNeXt, Swin...) give one feature map per stage: their last
stages go through an FPN (Lin et al. 2017). Plain ViTs give one stride-16 map from the last block:
ViTDet's simple feature pyramid (Li et al. 2022) builds strides 4, 8, 16 and 32 from it with
deconvolutions and a max-pool, no top-down path. Both read the backbone through timm's (and
open_clip's) ``forward_intermediates``, so one code path serves every family.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..errors import BobError


def intermediates(encoder: nn.Module, x: torch.Tensor, indices) -> list[torch.Tensor]:
    """NCHW intermediate features; open_clip's towers return a dict, timm models a list."""
    if not hasattr(encoder, "forward_intermediates"):
        raise BobError(f"{type(encoder).__name__} has no forward_intermediates(); detection needs a timm model or an open_clip tower")
    out = encoder.forward_intermediates(x, indices=indices, intermediates_only=True)
    if isinstance(out, dict):
        out = out.get("image_intermediates", out.get("intermediates"))
    return [f for f in out if f.dim() == 4]


class PyramidBackbone(nn.Module):
    """``forward(images) -> OrderedDict`` of feature maps with ``out_channels`` channels each, plus
    ``layout`` ('fpn' or 'simple') and ``strides`` for the anchor generator."""

    def __init__(self, encoder: nn.Module, img_size: int, out_channels: int = 128, max_levels: int = 4):
        super().__init__()
        self.encoder = encoder
        self.out_channels = out_channels
        was_training = encoder.training
        encoder.eval()
        with torch.no_grad():
            probe = intermediates(encoder, torch.zeros(1, 3, img_size, img_size, device=next(encoder.parameters()).device), None)
        encoder.train(was_training)
        if not probe:
            raise BobError(f"{type(encoder).__name__} returned no spatial intermediate features at img_size={img_size}")
        reductions = [img_size / f.shape[-1] for f in probe]
        channels = [f.shape[1] for f in probe]
        if len(set(round(r) for r in reductions)) == 1:  # plain ViT: one scale -> simple feature pyramid
            self.layout = "simple"
            self.indices = [len(probe) - 1]
            stride = round(reductions[-1])
            c = channels[-1]
            self.strides = [stride // 4, stride // 2, stride, stride * 2]
            self.scales = nn.ModuleList([
                nn.Sequential(nn.ConvTranspose2d(c, c // 2, 2, 2), nn.GroupNorm(1, c // 2), nn.GELU(), nn.ConvTranspose2d(c // 2, c // 4, 2, 2)),
                nn.ConvTranspose2d(c, c // 2, 2, 2),
                nn.Identity(),
                nn.MaxPool2d(2),
            ])
            dims = [c // 4, c // 2, c, c]
            self.lateral = nn.ModuleList([nn.Sequential(nn.Conv2d(d, out_channels, 1), nn.GroupNorm(1, out_channels),
                                                        nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.GroupNorm(1, out_channels)) for d in dims])
        else:  # hierarchical: the last stages, one per distinct stride, through an FPN
            from torchvision.ops import FeaturePyramidNetwork

            self.layout = "fpn"
            last_of_stride: dict[int, int] = {}
            for i, r in enumerate(reductions):
                last_of_stride[round(r)] = i
            picked = sorted(last_of_stride.items())[-max_levels:]
            self.indices = [i for _, i in picked]
            self.strides = [s for s, _ in picked]
            self.fpn = FeaturePyramidNetwork([channels[i] for i in self.indices], out_channels)
        self._all = len(probe)
        self.img_size = img_size

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        height, width = x.shape[-2:]
        if self.layout == "simple" and (height, width) != (self.img_size, self.img_size):
            # a plain ViT takes its one input size: a non-square batch (Cityscapes, COCO) is zero-padded to the square, as
            # ViTDet pads to 1024 x 1024, and each map is cropped back to the batch's extent for the anchors
            x = nn.functional.pad(x, (0, max(0, self.img_size - width), 0, max(0, self.img_size - height)))
        feats = intermediates(self.encoder, x, None if self.layout == "fpn" else 1)
        if self.layout == "simple":
            top = feats[-1]
            maps = [lat(scale(top))[..., : -(-height // s), : -(-width // s)] for scale, lat, s in zip(self.scales, self.lateral, self.strides)]
            return OrderedDict((str(i), m) for i, m in enumerate(maps))
        return self.fpn(OrderedDict((str(k), feats[i]) for k, i in enumerate(self.indices)))

"""Assemble a torchvision Faster R-CNN (or Mask R-CNN) around a :class:`PyramidBackbone`.

Anchor sizes follow the pyramid's strides (8 x stride per level, three aspect ratios), so the same
code serves 96-pixel generated images and 1024-pixel LVIS images. The detector normalises with the
backbone's own mean/std and resizes to ``img_size`` (its longer side), as the backbone expects.
Up to 300 detections per image leave the model with a low score threshold: AP needs the tail.
"""
from __future__ import annotations

from torch import nn

from .pyramid import PyramidBackbone



def apply_freeze(encoder: nn.Module, freeze: str) -> list[str]:
    """BoB's settings: ``all`` (frozen backbone), ``stages:k`` (the last k blocks/stages train),
    ``none`` (end to end). Returns the encoder parameter names that train."""
    from ..adapt.blocks import block_list
    from . import parse_freeze

    k = parse_freeze(freeze)
    if k is None:
        encoder.requires_grad_(True)
        return [n for n, _ in encoder.named_parameters()]
    encoder.requires_grad_(False)
    names = []
    blocks = block_list(encoder) if k else []
    for prefix, block in blocks[len(blocks) - k:]:
        block.requires_grad_(True)
        names += [f"{prefix}.{n}" for n, _ in block.named_parameters()]
    return names


def build_detector(encoder: nn.Module, preprocess, num_classes: int, hp: dict, make_predictor=None):
    """Faster R-CNN (``masks`` false) or Mask R-CNN over the backbone; ``num_classes`` excludes
    background. ``make_predictor(in_features)`` replaces the linear box classifier (open vocabulary)."""
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    size = int(preprocess.img_size)
    backbone = PyramidBackbone(encoder, size, int(hp.get("fpn_channels", 256)))
    names = [str(i) for i in range(len(backbone.strides))]
    anchors = AnchorGenerator(sizes=tuple((8 * s,) for s in backbone.strides), aspect_ratios=((0.5, 1.0, 2.0),) * len(backbone.strides))
    head_dim = int(hp.get("box_head_dim", 1024))  # torchvision's two-layer head is 1024 wide; small data trains faster narrower
    kwargs = dict(
        min_size=size, max_size=size, image_mean=list(preprocess.mean), image_std=list(preprocess.std),
        rpn_anchor_generator=anchors, box_roi_pool=MultiScaleRoIAlign(names, 7, 2),
        box_head=TwoMLPHead(backbone.out_channels * 7 * 7, head_dim),
        box_predictor=make_predictor(head_dim) if make_predictor else FastRCNNPredictor(head_dim, num_classes + 1),
        box_detections_per_img=int(hp.get("detections_per_image", 300)), box_score_thresh=float(hp.get("score_threshold", 0.001)),
        rpn_pre_nms_top_n_train=2000, rpn_post_nms_top_n_train=int(hp.get("proposals", 1000)),
        rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=int(hp.get("proposals", 1000)),
        box_batch_size_per_image=int(hp.get("rois_per_image", 512)),
    )
    if hp.get("masks"):
        from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

        return MaskRCNN(backbone, num_classes=None, mask_roi_pool=MultiScaleRoIAlign(names, 14, 2),
                        mask_head=MaskRCNNHeads(backbone.out_channels, (256,) * 4, 1), mask_predictor=MaskRCNNPredictor(256, 256, num_classes + 1), **kwargs)
    return FasterRCNN(backbone, num_classes=None, **kwargs)

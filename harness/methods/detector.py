"""Detection methods: ``detector`` (closed vocabulary) and ``ov_detector`` (open vocabulary, ViLD-text).

Both put the cell's backbone under torchvision's Faster R-CNN (Mask R-CNN with ``masks: true``)
through a feature pyramid (``harness/detect/``), train it with the one training loop (``fit``:
schedule, AMP, checkpoints and resume for SLURM requeue), run it on the task's evaluation split,
score the detections with the task's official evaluator, and keep them, in the official results
format, beside the record. ``freeze`` gives Battle of the Backbones' settings: ``all`` (frozen
backbone), ``stages:k`` (the last k blocks train) and ``none`` (end to end).
"""
from __future__ import annotations

import copy
import hashlib
import math
import time
from pathlib import Path

from ..errors import BobError
from ..registry import register_method
from ..spec import canonical_json
from ..types import DETECTION
from ..detect import parse_freeze
from .base import Method, MethodResult
from .finetune import AMP_MODES, OPTIMIZERS, check_choices, fit, make_optimizer

SCHEDULES = ("cosine", "step")


class DetectionDataset:
    """Images as [0, 1] tensors (the detector resizes and normalises) with torchvision targets:
    xyxy boxes, labels 1..C (category ids in sorted order; 0 is background), optional masks."""

    def __init__(self, split, label_of: dict[int, int], masks: bool = False, hflip: bool = False, keep_categories: set | None = None):
        self.split, self.label_of, self.masks, self.hflip = split, label_of, masks, hflip
        anns: dict[int, list] = {}
        for ann in split.gt["annotations"]:
            if keep_categories is None or ann["category_id"] in keep_categories:
                anns.setdefault(ann["image_id"], []).append(ann)
        self.images = list(split.gt["images"])
        self.anns = anns

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        import torch
        from PIL import Image
        from torchvision.transforms.functional import to_tensor

        info = self.images[i]
        with Image.open(self.split.images[info["id"]]) as im:
            image = to_tensor(im.convert("RGB"))
        anns = self.anns.get(info["id"], [])
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns],
                             dtype=torch.float32).reshape(-1, 4)
        target = {"boxes": boxes, "labels": torch.tensor([self.label_of[a["category_id"]] for a in anns], dtype=torch.int64),
                  "image_id": info["id"]}
        if self.masks:
            target["masks"] = _masks(anns, info["height"], info["width"])
        if self.hflip and torch.rand(()) < 0.5:
            width = image.shape[-1]
            image = image.flip(-1)
            target["boxes"] = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1) if len(boxes) else boxes
            if self.masks:
                target["masks"] = target["masks"].flip(-1)
        return image, target


def _masks(anns: list, height: int, width: int):
    import warnings

    import numpy as np
    import torch
    from pycocotools import mask as mask_utils

    out = []
    warnings.filterwarnings("ignore", message=".*__array__ implementation doesn't accept a copy keyword.*")  # pycocotools vs numpy 2
    for a in anns:
        seg = a.get("segmentation")
        if isinstance(seg, list) and seg:
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
        elif isinstance(seg, dict):
            rle = seg if isinstance(seg.get("counts"), (bytes, str)) else mask_utils.frPyObjects(seg, height, width)  # compressed, else uncompressed RLE
        else:
            raise BobError(f"annotation {a.get('id')} has no segmentation; masks: true needs polygon or RLE masks")
        out.append(mask_utils.decode(rle))
    return torch.from_numpy(np.stack(out)).to(torch.uint8) if out else torch.zeros((0, height, width), dtype=torch.uint8)


def _collate(batch):
    return tuple(zip(*batch))


def detections_of(model, dataset: DetectionDataset, category_of: dict[int, int], device: str, batch_size: int, masks: bool) -> list[dict]:
    """Run the detector; results in the official format ``{image_id, category_id, bbox: [x, y, w, h], score}``."""
    import torch
    from torch.utils.data import DataLoader

    from ..progress import progress

    out = []
    model.eval()
    with torch.inference_mode():
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=_collate)
        for images, targets in progress(loader, desc="detect", total=len(loader)):
            for target, pred in zip(targets, model([im.to(device) for im in images])):
                boxes = pred["boxes"].float().cpu().tolist()
                for k, ((x1, y1, x2, y2), label, score) in enumerate(zip(boxes, pred["labels"].tolist(), pred["scores"].float().cpu().tolist())):
                    det = {"image_id": int(target["image_id"]), "category_id": int(category_of[int(label)]),
                           "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)], "score": round(float(score), 5)}
                    if masks and "masks" in pred:
                        import numpy as np
                        from pycocotools import mask as mask_utils

                        rle = mask_utils.encode(np.asfortranarray((pred["masks"][k, 0] > 0.5).cpu().numpy().astype("uint8")))
                        det["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
                    out.append(det)
    return out


def train_detector(model, dataset: DetectionDataset, hp: dict, ctx, checkpoint: Path | None, frozen_encoder: bool) -> tuple[list, dict]:
    from torch.utils.data import DataLoader

    from ..adapt import train_mode

    device = ctx.device
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(trainable, hp)
    bs = int(hp["batch_size"])
    steps_per_epoch = max(1, math.ceil(len(dataset) / bs))

    def make_loader(epoch: int, generator):
        return DataLoader(dataset, batch_size=bs, shuffle=True, generator=generator, collate_fn=_collate, num_workers=0)

    def loss_of(batch, forward):
        images, targets = batch
        images = [im.to(device) for im in images]
        targets = [{k: (v.to(device) if hasattr(v, "to") else v) for k, v in t.items()} for t in targets]
        losses = forward(images, targets)
        return sum(losses.values()), len(images)

    def set_train_mode():
        train_mode(model, adapted=frozen_encoder)  # a frozen backbone keeps its batch-norm statistics too

    curve, images_seen, fit_s, amp = fit(model, trainable, opt, make_loader, loss_of, hp, ctx, checkpoint, steps_per_epoch,
                                         desc=f"detector {dataset.split.gt.get('info', {}).get('description', 'train')}", set_train_mode=set_train_mode)
    return curve, {"train_images_per_s": round(images_seen / fit_s, 2) if fit_s > 0 and images_seen else None, "amp": amp}


class Detector(Method):
    """Closed-vocabulary detection: a linear box classifier over the task's categories."""

    name = "detector"
    kinds = (DETECTION,)
    frozen_backbone = False
    description = "Faster R-CNN / Mask R-CNN over any timm or open_clip backbone (FPN, or ViTDet's simple pyramid for plain ViTs)"
    defaults = {"epochs": 12, "lr": 1e-4, "wd": 1e-4, "warmup_epochs": 1.0, "batch_size": 8, "optimizer": "adamw", "amp": "auto", "compile": False,
                "grad_clip": 10.0, "freeze": "none", "masks": False, "augment": True, "fpn_channels": 256, "box_head_dim": 1024, "rois_per_image": 512, "proposals": 1000, "detections_per_image": 300,
                "score_threshold": 0.001, "schedule": "cosine", "steps": None, "accum_steps": 1, "sync_bn": False}
    search_space = {}
    choices = {"optimizer": OPTIMIZERS, "amp": AMP_MODES, "schedule": SCHEDULES}
    backbone_sources = ("timm", "openclip")  # backbones with forward_intermediates (the pyramid reads them)
    metrics = {}
    open_vocabulary = False

    def resolve_hparams(self, given):
        resolved = super().resolve_hparams(given)
        check_choices(self.name, given, self.choices)
        try:
            parse_freeze(resolved["freeze"])
        except BobError as exc:
            raise BobError(f"method '{self.name}': {exc}") from None
        return resolved

    def classifier(self, backbone, task, hp, ctx):
        return None, None  # torchvision's own FastRCNNPredictor

    def run(self, backbone, task, hparams, ctx) -> MethodResult:
        import torch

        from ..detect.build import apply_freeze, build_detector

        if not hasattr(task, "split"):
            raise BobError(f"task {task.name} is not a detection set")
        train_split, eval_split = task.final_splits
        if train_split == eval_split:
            raise BobError(f"task {task.name} has no training split; give lvis:<val json>@<images>?train=<train json>")
        torch.manual_seed(ctx.seed)
        category_ids = task.category_ids
        label_of = {cid: i + 1 for i, cid in enumerate(category_ids)}
        category_of = {i + 1: cid for i, cid in enumerate(category_ids)}
        make_predictor, trained_categories = self.classifier(backbone, task, hparams, ctx)
        encoder = copy.deepcopy(backbone.model)
        backbone_params = sum(p.numel() for p in encoder.parameters())
        trainable_encoder = apply_freeze(encoder, hparams["freeze"])
        model = build_detector(encoder, backbone.preprocess, len(category_ids), hparams, make_predictor)
        train_ds = DetectionDataset(task.split(train_split), label_of, bool(hparams["masks"]), bool(hparams["augment"]), trained_categories)
        checkpoint = None
        if ctx.checkpoint_dir is not None:
            tag = hashlib.sha256(canonical_json({"train": train_split, **{k: v for k, v in hparams.items() if k != "search"}}).encode()).hexdigest()[:12]
            checkpoint = Path(ctx.checkpoint_dir) / f"{ctx.cell_id}-{tag}.pt"
        curve, report = train_detector(model, train_ds, hparams, ctx, checkpoint, frozen_encoder=hparams["freeze"] != "none")
        t0 = time.perf_counter()
        eval_ds = DetectionDataset(task.split(eval_split), label_of, False, False)
        detections = detections_of(model, eval_ds, category_of, ctx.device, max(1, int(hparams["batch_size"])), bool(hparams["masks"]))
        metrics = {k: v for k, v in task.evaluate(eval_split, detections).items() if v is not None}
        if hparams["masks"]:
            metrics.update({f"mask_{k}": v for k, v in task.evaluate(eval_split, detections, "segm").items() if v is not None and not k.startswith("fixed")})
        ctx.add_time("eval", time.perf_counter() - t0)
        metrics["n_detections"] = len(detections)
        metrics["n_images"] = len(eval_ds)
        total = sum(p.numel() for p in model.parameters())
        detector_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        trainable_names = set(trainable_encoder)
        report.update({"freeze": hparams["freeze"], "backbone_params": backbone_params, "trainable_backbone_params": sum(
            p.numel() for n, p in encoder.named_parameters() if n in trainable_names), "detector_params": total,
            "trainable_params": detector_trainable, "recipe": f"detector (freeze {hparams['freeze']})"})
        protocol = {"trained_on": train_split, "reported_on": eval_split, "selected_on": None, "selected": {},
                    "note": "fixed schedule, no selection", "evaluator": task.protocol, "open_vocabulary": self.open_vocabulary}
        if trained_categories is not None:
            protocol["trained_categories"] = len(trained_categories)
            protocol["novel_categories"] = len(category_ids) - len(trained_categories)
        return MethodResult(metrics, "AP", protocol, curves={"train": curve}, adaptation=report,
                            artifacts={"detections.json": detections})


register_method(Detector)


def category_text_embeddings(backbone, task, hp: dict, ctx):
    """One embedding per category (sorted id order): its name in every template, encoded, each
    normalised, averaged and renormalised (the CLIP recipe of ``zeroshot``); cached like image features."""
    from .zeroshot import class_embeddings, fill_templates, resolve_class_text, text_embeddings

    names, templates, _ = resolve_class_text(task, hp)
    prompts = fill_templates(names, templates)
    return class_embeddings(text_embeddings(backbone, prompts, ctx, hp, "detection-categories"), len(names), len(templates))


class OVDetector(Detector):
    """ViLD-text: the box classifier is the text embeddings of the category names (from the
    backbone's own text tower) plus a learned background; trained on the base categories only
    (the LVIS rare ones are novel: their boxes are removed from training), scored on all."""

    name = "ov_detector"
    description = "open-vocabulary detector (ViLD-text): box features vs text embeddings of category names; trained on base, scored on all"
    defaults = {**Detector.defaults, "temperature": 0.01, "classnames": None, "templates": None, "tokenizer": None, "text_batch_size": 256}
    backbone_requires = {"capabilities": ["text"], "why": "ov_detector classifies boxes with the text tower's embeddings of the category names (an openclip:... backbone)"}
    open_vocabulary = True

    def classifier(self, backbone, task, hp, ctx):
        import torch

        from ..detect.heads import TextEmbeddingPredictor

        if getattr(backbone, "text_encoder", None) is None:
            raise BobError(f"ov_detector needs a backbone with a text tower; {backbone.name} has none")
        embeddings = torch.from_numpy(category_text_embeddings(backbone, task, hp, ctx)).float()
        novel = set(task.novel_category_ids())
        base = [cid for cid in task.category_ids if cid not in novel]
        if not base:
            raise BobError(f"task {task.name}: every category is rare (novel); nothing to train the open-vocabulary detector on")
        mask = torch.tensor([cid not in novel for cid in task.category_ids])
        temperature = float(hp["temperature"])
        return (lambda in_features: TextEmbeddingPredictor(in_features, embeddings, mask, temperature)), set(base)


register_method(OVDetector)


def scenic_top_k(boxes, scores, k: int):
    """The OWL-ViT (scenic) LVIS protocol: the top ``k`` (box, class) pairs over all boxes x classes of
    an image, not the argmax class per box. Returns [(box index, class index, score)]."""
    import numpy as np

    flat = scores.reshape(-1)
    k = min(k, flat.size)
    top = np.argpartition(-flat, k - 1)[:k] if k else np.zeros(0, dtype=np.int64)
    top = top[np.argsort(-flat[top], kind="stable")]
    n_classes = scores.shape[1]
    return [(int(i // n_classes), int(i % n_classes), float(flat[i])) for i in top]


class OVZeroShot(Method):
    """Zero-shot open-vocabulary detection with a pretrained open-vocabulary detector (OWL-ViT, OWLv2):
    category names -> text queries, no training; scored by the task's official evaluator."""

    name = "ov_zeroshot"
    kinds = (DETECTION,)
    description = "zero-shot open-vocabulary detection (OWL-ViT / OWLv2, scenic protocol: top 300 box x class pairs per image)"
    defaults = {"detections_per_image": 300, "batch_size": 8, "classnames": None, "templates": None, "tokenizer": None, "text_batch_size": 256}
    search_space = {}
    backbone_requires = {"capabilities": ["open-vocabulary-detection"], "why": "ov_zeroshot needs an open-vocabulary detector backbone (hf-owl:...)"}

    def run(self, backbone, task, hparams, ctx) -> MethodResult:
        import numpy as np
        from PIL import Image

        from ..progress import progress

        split_name = task.final_splits[1]
        split = task.split(split_name)
        _, detect = backbone.open_vocabulary_detector(hparams.get("tokenizer"))
        queries = category_text_embeddings(backbone, task, hparams, ctx)
        category_ids = task.category_ids
        k = int(hparams["detections_per_image"])
        bs = max(1, int(hparams["batch_size"]))
        detections = []
        t0 = time.perf_counter()
        images = split.gt["images"]
        for start in progress(range(0, len(images), bs), desc="ov_zeroshot", total=math.ceil(len(images) / bs)):
            infos = images[start:start + bs]
            pil = []
            for info in infos:
                with Image.open(split.images[info["id"]]) as im:
                    pil.append(im.convert("RGB"))
            for info, (boxes, scores) in zip(infos, detect(pil, queries, ctx.device)):
                for b, c, score in scenic_top_k(boxes, np.asarray(scores), k):
                    x1, y1, x2, y2 = (float(v) for v in boxes[b])  # kept even when degenerate: the protocol ranks, it does not filter
                    detections.append({"image_id": int(info["id"]), "category_id": int(category_ids[c]),
                                       "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)], "score": round(score, 6)})
        metrics = {k_: v for k_, v in task.evaluate(split_name, detections).items() if v is not None}
        metrics["n_detections"] = len(detections)
        metrics["n_images"] = len(images)
        ctx.add_time("eval", time.perf_counter() - t0)
        protocol = {"reported_on": split_name, "selected_on": None, "selected": {}, "note": "zero-shot: no training, no selection",
                    "protocol": f"scenic: top {k} (box, class) pairs per image", "evaluator": task.protocol}
        return MethodResult(metrics, "AP", protocol, artifacts={"detections.json": detections})


register_method(OVZeroShot)

"""Static facts about open_clip names: model family and pre-training data, parsed from the names.

Kept free of torch/open_clip imports: the catalog generator and ``bob list`` both use it.
"""
from __future__ import annotations

# tag prefix -> pre-training data, longest prefix first
DATA_PREFIXES = (
    ("mscoco_finetuned_laion2b", "LAION-2B + MS-COCO fine-tune"), ("frozen_laion5b", "LAION-5B"), ("laion_aesthetic", "LAION-Aesthetics"),
    ("laion2b", "LAION-2B"), ("laion400m", "LAION-400M"), ("laion5b", "LAION-5B"), ("openai", "WIT-400M (OpenAI CLIP)"),
    ("datacompdr", "DataCompDR-1B"), ("datacomp_xl", "DataComp-1B"), ("datacomp1b", "DataComp-1B"), ("datacomp_s34b", "DataComp-1B"),
    ("datacomp_l", "DataComp-L"), ("datacomp_m", "DataComp-M"), ("datacomp_s", "DataComp-S"), ("commonpool_xl", "CommonPool-XL"),
    ("commonpool_l", "CommonPool-L"), ("commonpool_m", "CommonPool-M"), ("commonpool_s", "CommonPool-S"), ("dfndr2b", "DFNDR-2B"),
    ("dfn2b", "DFN-2B"), ("dfn5b", "DFN-5B"), ("metaclip2_worldwide", "MetaCLIP-2 worldwide"), ("metaclip_400m", "MetaCLIP-400M"),
    ("metaclip_fullcc", "MetaCLIP-2.5B"), ("metaclip_altogether", "MetaCLIP Altogether"), ("merged2b", "Merged-2B (EVA)"),
    ("webli", "WebLI"), ("yfcc15m", "YFCC-15M"), ("cc12m", "CC12M"),
)
TAG_DATA_BY_MODEL = (("SigLIP2", "WebLI"), ("PE-Core", "MetaCLIP (PE)"), ("MobileCLIP", "DataCompDR-1B"))


def parse_pretrain_data(tag: str, model: str = "") -> str:
    for prefix, label in DATA_PREFIXES:
        if tag.startswith(prefix):
            return label
    for marker, label in TAG_DATA_BY_MODEL:  # tags such as 'v1', 'meta', 'mrl' name a release, not a dataset
        if marker in model:
            return label
    return "unknown"


def family_of(model: str, cfg: dict | None = None) -> str:
    name = model.lower()
    if name.startswith("rn"):
        return "cnn"
    if "convnext" in name:
        return "convnext"
    if "swin" in name:
        return "swin"
    if "mobileclip" in name:
        return "hybrid"
    if "vitamin" in name:
        return "hybrid"
    if "vit" in name or "eva" in name or "pe-core" in name or "coca" in name:
        return "vit"
    vision = (cfg or {}).get("vision_cfg", {})
    return "vit" if vision.get("patch_size") or "vit" in str(vision.get("timm_model_name", "")) else "other"

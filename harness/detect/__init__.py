"""Detection on any image backbone: a feature pyramid over the backbone's intermediate features,
under torchvision's Faster R-CNN / Mask R-CNN (``build.py``), with a closed-vocabulary or a
text-embedding classifier (``heads.py``). The training loop is the one in ``methods/finetune.py``."""

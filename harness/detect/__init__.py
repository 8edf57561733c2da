"""Detection on any image backbone: a feature pyramid over the backbone's intermediate features,
under torchvision's Faster R-CNN / Mask R-CNN (``build.py``), with a closed-vocabulary or a
text-embedding classifier (``heads.py``). The training loop is the one in ``methods/finetune.py``."""

FREEZE_CHOICES = ("all", "none")  # and "stages:<k>"; this package's __init__ stays free of torch (plugins import it)

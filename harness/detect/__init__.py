"""Detection on any image backbone: a feature pyramid over the backbone's intermediate features,
under torchvision's Faster R-CNN / Mask R-CNN (``build.py``), with a closed-vocabulary or a
text-embedding classifier (``heads.py``). The training loop is the one in ``methods/finetune.py``."""

# this package's __init__ stays free of torch: the detection methods' plugin module imports it


def parse_freeze(freeze) -> int | None:
    """``all`` -> 0 blocks train, ``none`` -> None (everything trains), ``stages:k`` -> k; else a one-line error."""
    from ..errors import BobError

    text = str(freeze)
    if text == "none":
        return None
    if text == "all":
        return 0
    if text.startswith("stages:") and text[7:].isdigit():
        return int(text[7:])
    raise BobError(f"freeze={freeze!r} is not all, none or stages:<k> (the last k blocks train)")

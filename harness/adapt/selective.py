"""Selective tuning: train a subset of the backbone's own parameters (nothing is added).

- ``partial``: the last ``k`` blocks and the final norm (plus the head, which always trains);
- ``bitfit`` (Ben Zaken et al. 2022): every bias;
- ``ln_tune``: the affine parameters of every normalisation layer.
"""
from __future__ import annotations

from ..errors import BobError
from . import Adaptation, register_recipe
from .blocks import block_list, final_norm_params, is_norm


@register_recipe("partial", hparams={"k": 1}, description="last k blocks + final norm + head")
def partial(encoder, hp) -> Adaptation:
    blocks = block_list(encoder)
    k = hp.get("k", 1)
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= len(blocks):
        raise BobError(f"partial: k={k!r} must be an integer 0..{len(blocks)} (the model has {len(blocks)} blocks)")
    prefixes = tuple(name + "." for name, _ in blocks[len(blocks) - k:])
    names = [n for n, _ in encoder.named_parameters() if n.startswith(prefixes)] + final_norm_params(encoder)
    return Adaptation("partial", sorted(set(names)), notes={"blocks_trained": k, "blocks_total": len(blocks)})


@register_recipe("bitfit", description="every bias + head (BitFit)")
def bitfit(encoder, hp) -> Adaptation:
    # ".bias" everywhere, and the separate q/v biases of BEiT / EVA attention (``q_bias``, ``v_bias``)
    names = [n for n, p in encoder.named_parameters() if n.rpartition(".")[2] == "bias" or n.rpartition(".")[2].endswith("_bias")]
    if not names:
        raise BobError("bitfit: this model has no bias parameters")
    return Adaptation("bitfit", names)


@register_recipe("ln_tune", description="normalisation-layer affine parameters + head")
def ln_tune(encoder, hp) -> Adaptation:
    names = [f"{mname}.{pname}" if mname else pname for mname, module in encoder.named_modules() if is_norm(module)
             for pname, _ in module.named_parameters(recurse=False)]
    if not names:
        raise BobError("ln_tune: this model has no normalisation layer with affine parameters")
    return Adaptation("ln_tune", names)

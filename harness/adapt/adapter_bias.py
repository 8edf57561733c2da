"""AdapterBias (Fu et al., Findings of NAACL 2022): a token-dependent shift of each block's MLP output.

Beside the MLP's output projection (``fc2``), one vector ``v`` (d) is added to every token, scaled
per token by a linear map of that projection's input: ``fc2(h) + alpha(h) v`` with
``alpha = Linear(hidden, 1)`` — the reference's ``adapter_alpha`` on the intermediate states and
``adapter_vector`` (zero init, so the adapted model is the backbone at step 0).

The reference also trains the LayerNorms that its (post-LN) BERT layers' outputs flow into (the
embedding LN and every layer's output LN); in a pre-LN ViT those are the norm in front of each
block's attention (a ConvNeXt block's one norm) and the final norm, which ``norms: true`` (the
default) trains. A 1x1-conv MLP (ConvNeXt's ``conv_mlp``) gets a 1x1-conv ``alpha``.
``token_dependent: false`` drops ``alpha`` (the paper's ablation): the shift is then static, and
after training it folds into ``fc2``'s bias so the served model is the backbone's architecture.
"""
from __future__ import annotations

from ..errors import BobError
from . import Adaptation, register_recipe
from .adapters import TRANSFORMER_ARCHS
from .blocks import block_list, final_norm_params
from .checks import flag
from .layers import channel_dim, drop_attributes, fold, matrix_shape, remove_hooks

PAPER = "Fu et al., Findings of NAACL 2022, AdapterBias: Parameter-efficient Token-dependent Representation Shift for Adapters in NLP Tasks"
REQUIRES = {"architectures": (*TRANSFORMER_ARCHS, "convnext", "test_vit"), "why": "AdapterBias shifts the output of a block's MLP (block.mlp.fc2)"}


def _vector(fc2):
    v = fc2.adapterbias_vector
    return v if channel_dim(fc2) == -1 else v.view(1, -1, 1, 1)  # a 1x1-conv MLP (ConvNeXt's conv_mlp): channels in dim 1


def _token_shift_hook(fc2, inputs, output):
    return output + fc2.adapterbias_alpha(inputs[0]) * _vector(fc2)


def _static_shift_hook(fc2, inputs, output):
    return output + _vector(fc2)


def _is_projection(fc2) -> bool:
    import torch.nn as nn

    return isinstance(fc2, nn.Linear) or (isinstance(fc2, nn.Conv2d) and tuple(fc2.kernel_size) == (1, 1) and fc2.groups == 1)


def check_hparams(hp) -> None:
    flag("adapter_bias", "token_dependent", hp.get("token_dependent", True))
    flag("adapter_bias", "norms", hp.get("norms", True))


def check(encoder, hp) -> None:
    check_hparams(hp)
    for bname, block in block_list(encoder):
        fc2 = getattr(getattr(block, "mlp", None), "fc2", None)
        if fc2 is None or not _is_projection(fc2):
            raise BobError(f"adapter_bias: block {bname} has no MLP output projection (block.mlp.fc2, linear or 1x1 conv)")


@register_recipe("adapter_bias", hparams={"token_dependent": True, "norms": True}, requires=REQUIRES, identity_at_init=True,
                 check=check, check_hparams=check_hparams, paper=PAPER,
                 description="AdapterBias: fc2(h) + Linear(h) * v in every MLP (v zero-init), plus the norms the blocks' outputs flow into")
def adapter_bias(encoder, hp) -> Adaptation:
    import torch
    import torch.nn as nn

    check(encoder, hp)
    token_dependent = bool(hp.get("token_dependent", True))
    trainable, fc2s = [], []
    for bname, block in block_list(encoder):
        fc2 = block.mlp.fc2
        width, hidden = matrix_shape(fc2)
        fc2.adapterbias_vector = nn.Parameter(torch.zeros(width, device=fc2.weight.device, dtype=fc2.weight.dtype))
        trainable.append(f"{bname}.mlp.fc2.adapterbias_vector")
        if token_dependent:
            alpha = nn.Linear(hidden, 1) if channel_dim(fc2) == -1 else nn.Conv2d(hidden, 1, 1)
            fc2.adapterbias_alpha = alpha.to(fc2.weight.device, fc2.weight.dtype)
            trainable += [f"{bname}.mlp.fc2.adapterbias_alpha.weight", f"{bname}.mlp.fc2.adapterbias_alpha.bias"]
        fc2.register_forward_hook(_token_shift_hook if token_dependent else _static_shift_hook)
        fc2s.append(fc2)
        first_norm = "norm1" if hasattr(block, "norm1") else "norm" if hasattr(block, "norm") else None  # ConvNeXt: its one norm
        if hp.get("norms", True) and first_norm:
            trainable += [f"{bname}.{first_norm}.{p}" for p, _ in getattr(block, first_norm).named_parameters()]
    if hp.get("norms", True):
        trainable += final_norm_params(encoder)

    def merge(enc) -> dict:
        for fc2 in fc2s:
            fold(fc2, torch.zeros_like(fc2.weight), fc2.adapterbias_vector.detach())
            remove_hooks(fc2, _static_shift_hook)
            drop_attributes(fc2, "adapterbias_vector")
        return {"merged": True, "merged_layers": len(fc2s)}

    return Adaptation("adapter_bias", trainable, notes={"token_dependent": token_dependent, "norms": bool(hp.get("norms", True))},
                      merge=None if token_dependent else merge)

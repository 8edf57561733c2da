"""Bottleneck adapters on the MLP of every transformer block.

- ``adapter`` (Houlsby / Pfeiffer placement, sequential): ``y = m + up(act(down(m)))`` with
  ``m = MLP(x)``;
- ``adaptformer`` (Chen et al. 2022, parallel): ``y = MLP(x) + s * up(act(down(x)))`` with a
  fixed scale ``s`` (0.1 in the paper).

The down-projection is Kaiming-uniform (PyTorch's Linear default) and the up-projection starts at
zero: the adapted model equals the backbone at step 0, and both projections receive gradients
from the second step on. (VPT's "Adapter" baseline zero-initialises *both* projections, so with
GELU(0) = 0 only the up-projection's bias ever trains; that cannot happen here.)

Implemented as forward hooks on ``block.mlp`` with the adapter stored as ``block.mlp.bob_adapter``:
the backbone's own parameter names are untouched.
"""
from __future__ import annotations

from ..errors import BobError
from . import Adaptation, register_recipe
from .blocks import block_list

TRANSFORMER_ARCHS = ("vit_", "deit", "beit", "eva", "flexivit", "swin", "vit")


def make_bottleneck(dim: int, bottleneck: int, activation: str):
    """down (Kaiming-uniform, PyTorch's default) -> activation -> up (zero): the identity at init."""
    import torch.nn as nn

    acts = {"gelu": nn.GELU, "relu": nn.ReLU}
    if activation not in acts:
        raise BobError(f"adapter activation {activation!r} is not one of {', '.join(acts)}")
    module = nn.Sequential(nn.Linear(dim, bottleneck), acts[activation](), nn.Linear(bottleneck, dim))
    nn.init.zeros_(module[2].weight)
    nn.init.zeros_(module[2].bias)
    return module


def _sequential_hook(mlp, inputs, output):
    return output + mlp.bob_adapter(output)


def _parallel_hook(mlp, inputs, output):
    return output + mlp.bob_adapter_scale * mlp.bob_adapter(inputs[0])


def _add(encoder, hp, parallel: bool, name: str) -> Adaptation:
    bottleneck = hp.get("bottleneck", 8)
    if not isinstance(bottleneck, int) or isinstance(bottleneck, bool) or bottleneck < 1:
        raise BobError(f"{name}: bottleneck={bottleneck!r} must be a positive integer")
    trainable = []
    for bname, block in block_list(encoder):
        mlp = getattr(block, "mlp", None)
        fc2 = getattr(mlp, "fc2", None)  # the MLP's output projection (plain MLP, GLU and SwiGLU alike): its width is the block's
        if mlp is None or fc2 is None or not hasattr(fc2, "out_features"):
            raise BobError(f"{name}: block {bname} has no transformer MLP (block.mlp.fc2); adapters need a ViT/Swin-style model")
        dim = fc2.out_features
        mlp.bob_adapter = make_bottleneck(dim, bottleneck, hp.get("activation", "relu" if parallel else "gelu"))
        mlp.bob_adapter_scale = float(hp.get("scale", 0.1))
        mlp.register_forward_hook(_parallel_hook if parallel else _sequential_hook)  # reads the adapter from its module: deepcopy-safe
        trainable += [f"{bname}.mlp.bob_adapter.{p}" for p, _ in mlp.bob_adapter.named_parameters()]
    return Adaptation(name, trainable, notes={"bottleneck": bottleneck})


@register_recipe("adapter", hparams={"bottleneck": 8, "activation": "gelu"}, identity_at_init=True,
                 requires={"architectures": TRANSFORMER_ARCHS, "why": "adapters sit on the MLP of transformer blocks"},
                 description="bottleneck adapter after each MLP (sequential; up-projection zero-init)")
def adapter(encoder, hp) -> Adaptation:
    return _add(encoder, hp, parallel=False, name="adapter")


@register_recipe("adaptformer", hparams={"bottleneck": 8, "scale": 0.1, "activation": "relu"}, identity_at_init=True,
                 requires={"architectures": TRANSFORMER_ARCHS, "why": "AdaptFormer runs parallel to the MLP of transformer blocks"},
                 description="AdaptFormer: bottleneck parallel to each MLP, scaled by s (up-projection zero-init)")
def adaptformer(encoder, hp) -> Adaptation:
    return _add(encoder, hp, parallel=True, name="adaptformer")

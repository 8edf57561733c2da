"""SCT (Zhao et al., IJCV 2023, "SCT: A Simple Baseline for Parameter-Efficient Fine-Tuning via
Salient Channels"): a task vector on the ``channels`` (K) most salient channels of each block.

Selection, on the cell's training split only, as the reference computes it: the frozen backbone
runs over the split; for each class, the L2 norm of every channel of the tuned activation over
that class's images and tokens (prefix tokens excluded, as the reference drops [CLS]; a conv's
spatial positions); the class-balanced mean of these norms ranks the channels and the top K are
chosen (ties go to the lower channel index).

``channels`` is K (96 in the paper, for ViT-B's 768) or a share of each layer's width (0.125 = the
paper's 96 / 768, for backbones whose blocks differ in width such as ResNets).

Tuning: on those K channels, ``y_K <- y_K + A y_K + c`` with one ``K x K`` linear map per block
(truncated-normal std 0.02, zero bias: the reference's init). bob tunes the output of each
block's last linear / conv layer (a transformer's ``mlp.fc2`` — the reference's *SCT-MLP*
placement; a ResNet block's ``conv2`` / ``conv3``), which makes the update a linear map of that
layer's output channels: after training it folds into the layer's weights and the served model
is the backbone's architecture. (The paper's headline *SCT-attn* tunes the residual stream after
attention, which cannot fold into any weight.) With K=96 on ViT-B/16 both cost 12 x (96^2 + 96)
= 111,744 parameters, the paper's 0.11 M. The selected channels, per block, are in the record.
"""
from __future__ import annotations

from ..errors import BobError
from . import Adaptation, register_recipe
from .blocks import block_list
from .checks import integer, number
from .layers import channel_dim, drop_attributes, fold, is_linear_or_conv, matrix_shape, remove_hooks
from .training_split import selection_digest

PAPER = "Zhao et al., IJCV 2023, SCT: A Simple Baseline for Parameter-Efficient Fine-Tuning via Salient Channels"


def output_layers(encoder) -> list[tuple[str, object]]:
    """Per block, its last linear / conv layer in registration order (a downsample shortcut excluded)."""
    out = []
    for bname, block in block_list(encoder):
        layers = [(f"{bname}.{n}", m) for n, m in block.named_modules() if n and is_linear_or_conv(m) and "downsample" not in n]
        if layers:
            out.append(layers[-1])
    return out


def _sct_hook(module, inputs, output):
    dim = channel_dim(module)
    chosen = output.index_select(dim, module.sct_index)
    if dim == 1:  # conv: (B, K, H, W) -> channels last for the K x K map, and back
        update = module.sct_map(chosen.movedim(1, -1)).movedim(-1, 1)
    else:
        update = module.sct_map(chosen)
    return output.index_add(dim, module.sct_index, update.to(output.dtype))


def channels_for(k, width: int) -> int:
    """K for a layer of ``width`` channels: an integer as given, a fraction of the width (at least 1)."""
    return max(1, int(round(k * width))) if isinstance(k, float) else int(k)


def check_hparams(hp) -> None:
    k = hp.get("channels", 96)
    if isinstance(k, float):
        number("sct", "channels", k, 0.0, 1.0, open_low=True, why="a share of each layer's channels")
    else:
        integer("sct", "channels", k, 1, why="salient channels tuned per block (K), or a share of each layer's width in (0, 1]")


def check(encoder, hp) -> None:
    check_hparams(hp)
    layers = output_layers(encoder)
    if not layers:
        raise BobError("sct: no block of this model ends in a linear or conv layer")
    k = hp.get("channels", 96)
    for name, module in layers:
        width = matrix_shape(module)[0]
        if channels_for(k, width) > width:
            raise BobError(f"sct: channels={k} is larger than the model: layer {name} has {width} output channels; "
                           f"use channels <= {width}, or a share of each layer's width such as 0.125")


def saliency(encoder, layers, data) -> dict:
    """Per layer, the class-balanced mean over classes of each channel's L2 norm on that class's training images."""
    import torch

    prefix = int(getattr(encoder, "num_prefix_tokens", 0) or 0)
    sums: dict[str, torch.Tensor] = {}
    current: dict[str, torch.Tensor] = {}

    def capture(name, module):
        def hook(_, __, output):
            y = output.detach().double()
            if channel_dim(module) == 1:
                y = y.pow(2).sum(dim=(2, 3))  # (B, C)
            else:
                y = y[:, prefix:] if y.dim() == 3 and prefix else y
                y = y.pow(2).reshape(y.shape[0], -1, y.shape[-1]).sum(1)
            current[name] = y
        return hook

    handles = [module.register_forward_hook(capture(name, module)) for name, module in layers]
    encoder.to(data.device).eval()  # the selection runs where the cell trains
    seen = torch.zeros(data.num_classes, dtype=torch.bool)  # classes absent from the split do not enter the class mean
    try:
        with torch.no_grad():
            for views, labels in data.batches():
                encoder(views[0])
                onehot = torch.nn.functional.one_hot(labels.long(), data.num_classes).double().to(views[0].device)
                seen |= onehot.sum(0).cpu() > 0
                for name, y in current.items():
                    sums[name] = sums.get(name, 0) + onehot.t() @ y  # (classes, C): sum of squares per class
    finally:
        for handle in handles:
            handle.remove()
    return {name: total[seen.to(total.device)].sqrt().mean(0) for name, total in sums.items()}


@register_recipe("sct", hparams={"channels": 96}, needs_data=True, check=check, check_hparams=check_hparams, paper=PAPER,
                 description="SCT: a K x K task map on the K most salient output channels of each block (chosen on the training split), merged after training")
def sct(encoder, hp, data) -> Adaptation:
    import torch
    import torch.nn as nn

    check(encoder, hp)
    layers = output_layers(encoder)
    scores = saliency(encoder, layers, data)
    trainable, selection = [], {}
    for name, module in layers:
        k = channels_for(hp.get("channels", 96), matrix_shape(module)[0])
        order = sorted(range(len(scores[name])), key=lambda c: (-float(scores[name][c]), c))[:k]
        index = torch.tensor(sorted(order), dtype=torch.long, device=module.weight.device)
        module.register_buffer("sct_index", index)
        module.sct_map = nn.Linear(k, k, bias=module.bias is not None).to(module.weight.device, module.weight.dtype)
        nn.init.trunc_normal_(module.sct_map.weight, std=0.02)
        if module.sct_map.bias is not None:
            nn.init.zeros_(module.sct_map.bias)
        module.register_forward_hook(_sct_hook)
        trainable += [f"{name}.sct_map.{p}" for p, _ in module.sct_map.named_parameters()]
        selection[name] = index.cpu().tolist()
    layer_map = dict(layers)

    def merge(enc) -> dict:
        for name in selection:
            module = layer_map[name]
            idx, a = module.sct_index, module.sct_map.weight.detach()
            rows = module.weight.detach().reshape(module.weight.shape[0], -1)
            delta = torch.zeros_like(rows)
            delta[idx] = a @ rows[idx]  # the selected rows become (I + A) W_K
            delta_bias = None
            if module.bias is not None:
                delta_bias = torch.zeros_like(module.bias.detach())
                delta_bias[idx] = a @ module.bias.detach()[idx] + module.sct_map.bias.detach()
            fold(module, delta, delta_bias)
            remove_hooks(module, _sct_hook)
            drop_attributes(module, "sct_map", "sct_index")
        return {"merged": True, "merged_layers": len(selection)}

    notes = {"channels": hp.get("channels", 96), "selection": data.describe(rule="top-K class-balanced L2 norm of each block's output-layer channels",
                                                       sha256=selection_digest(selection), channels=selection)}
    return Adaptation("sct", trainable, notes=notes, merge=merge)

"""GPS (Zhang et al., CVPR 2024): gradient-based parameter selection, then sparse tuning.

Selection, on the cell's training split only: one pass accumulates the gradient of a supervised
contrastive loss (SupCon, temperature 0.07, two augmented views per image; ``selection_loss: ce``
uses cross-entropy through a fresh linear head instead) with respect to every linear / conv
weight of the frozen backbone; then, for every output neuron (a weight row; a conv kernel is
``out x (in/groups * kh * kw)``), the ``per_neuron`` input connections with the largest
|gradient| are chosen (the reference's ``times_para``, 1 in its VTAB scripts).

Tuning: the chosen weight entries (a vector of deltas scattered onto the frozen weight), every
bias of those layers and every layer-scale ``gamma`` train, as in the reference's mask (norm
layers, position embeddings and class tokens stay frozen). The delta starts at zero (the adapted
model is the backbone at step 0) and after training folds into the weights: the served model is
the backbone's architecture with a sparse set of changed weights.

The reference masks gradients of the full weight and trains with Adam and weight decay 0 (with
AdamW and a non-zero decay a masked full weight would still decay everywhere); bob's delta
parameter holds exactly the selected entries, so weight decay touches only those. The selection
(per layer, the chosen columns of each row) is written beside the record; the record keeps its
SHA-256, the split and the per-layer counts.
"""
from __future__ import annotations

from ..errors import BobError
from . import Adaptation, register_recipe
from .blocks import is_norm, route_fused_qkv_through_module
from .checks import choice, integer, number
from .layers import all_layers, apply_weight, drop_attributes, fold, matrix_shape, remove_hooks
from .training_split import selection_digest

PAPER = "Zhang et al., CVPR 2024, Gradient-based Parameter Selection for Efficient Fine-Tuning"
LOSSES = ("supcon", "ce")


def _gps_hook(module, inputs, output):
    import torch

    flat = torch.zeros(module.weight.numel(), dtype=module.gps_delta.dtype, device=module.gps_delta.device)
    delta = flat.index_put((module.gps_index,), module.gps_delta).view_as(module.weight)
    return output + apply_weight(module, inputs[0], delta)


def supcon_loss(features, labels, temperature: float = 0.07):
    """Supervised contrastive loss (Khosla et al. 2020) over ``views`` x batch L2-normalised features:
    every other sample of the same label is a positive; the anchor itself is excluded."""
    import torch
    import torch.nn.functional as F

    views, batch = features.shape[0], features.shape[1]
    z = F.normalize(features.reshape(views * batch, -1), dim=1)
    y = labels.repeat(views)
    logits = z @ z.t() / temperature
    self_mask = torch.eye(len(y), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (y[:, None] == y[None, :]) & ~self_mask
    per_anchor = -(log_prob.masked_fill(~positives, 0.0).sum(1)) / positives.sum(1).clamp_min(1)
    return per_anchor.mean()


def check_hparams(hp) -> None:
    integer("gps", "per_neuron", hp.get("per_neuron", 1), 1, why="weights selected per output neuron")
    choice("gps", "selection_loss", hp.get("selection_loss", "supcon"), LOSSES)
    number("gps", "temperature", hp.get("temperature", 0.07), 0.0, open_low=True)


def check(encoder, hp) -> None:
    check_hparams(hp)
    layers = all_layers(encoder)
    if not layers:
        raise BobError("gps: the model has no linear or conv layer to select weights in")
    k = hp.get("per_neuron", 1)
    for name, module in layers:
        columns = matrix_shape(module)[1]
        if k > columns:
            raise BobError(f"gps: per_neuron={k} is larger than the model: layer {name} ({type(module).__name__} {tuple(module.weight.shape)}) "
                           f"has {columns} weights per output neuron; use per_neuron <= {columns}")


def gradients(encoder, layers, data, hp) -> dict:
    """Sum over the training split of d loss / d weight, for every selectable layer (the backbone frozen, in eval mode)."""
    import torch

    encoder.to(data.device)  # the selection runs where the cell trains (the loop's caller moves the model there anyway)
    weights = {name: module.weight for name, module in layers}
    saved = {name: p.requires_grad for name, p in encoder.named_parameters()}
    selected = {id(w) for w in weights.values()}
    for p in encoder.parameters():
        p.requires_grad_(id(p) in selected)
        p.grad = None
    encoder.eval()
    loss_name = hp.get("selection_loss", "supcon")
    head = None
    if loss_name == "ce":
        torch.manual_seed(data.seed)
        head = torch.nn.Linear(int(data.feature_dim or encoder.num_features), data.num_classes).to(data.device)
    temperature = float(hp.get("temperature", 0.07))
    for views, labels in data.batches(augment=loss_name == "supcon", views=2 if loss_name == "supcon" else 1):
        if loss_name == "supcon":
            features = encoder(torch.cat(views)).reshape(2, len(labels), -1)
            loss = supcon_loss(features, labels, temperature)
        else:
            loss = torch.nn.functional.cross_entropy(head(encoder(views[0])), labels)
        loss.backward()
    grads = {name: (w.grad.detach().clone() if w.grad is not None else torch.zeros_like(w)) for name, w in weights.items()}
    for name, p in encoder.named_parameters():
        p.grad = None
        p.requires_grad_(saved[name])
    return grads


@register_recipe("gps", hparams={"per_neuron": 1, "selection_loss": "supcon", "temperature": 0.07}, identity_at_init=True, needs_data=True,
                 check=check, check_hparams=check_hparams, paper=PAPER,
                 description="GPS: per output neuron, the top-|gradient| weights on the training split train (+ biases), merged after training")
def gps(encoder, hp, data) -> Adaptation:
    import torch
    import torch.nn as nn

    check(encoder, hp)
    k = int(hp.get("per_neuron", 1))
    layers = all_layers(encoder)
    route_fused_qkv_through_module(encoder, [n for n, _ in layers])
    grads = gradients(encoder, layers, data, hp)
    trainable, selection, counts = [], {}, {}
    for name, module in layers:
        rows, columns = matrix_shape(module)
        scores = grads[name].reshape(rows, columns).abs()
        chosen = torch.topk(scores, k, dim=1, sorted=True).indices.sort(dim=1).values  # ties: topk's order, then ascending columns
        flat = (torch.arange(rows, device=chosen.device)[:, None] * columns + chosen).reshape(-1)
        module.register_buffer("gps_index", flat.to(module.weight.device))
        module.gps_delta = nn.Parameter(torch.zeros(flat.numel(), dtype=module.weight.dtype, device=module.weight.device))
        module.register_forward_hook(_gps_hook)
        trainable.append(f"{name}.gps_delta")
        if module.bias is not None:
            trainable.append(f"{name}.bias")
        selection[name] = chosen.cpu().tolist() if k > 1 else chosen[:, 0].cpu().tolist()
        counts[name] = int(flat.numel())
    modules = dict(encoder.named_modules())
    for pname, _ in encoder.named_parameters():  # layer scale (timm's LayerScale.gamma) trains in the reference's mask too
        owner = modules.get(pname.rpartition(".")[0])
        if pname.endswith(".gamma") and owner is not None and not is_norm(owner):
            trainable.append(pname)
    layer_map = dict(layers)

    def merge(enc) -> dict:
        for name in counts:
            module = layer_map[name]
            flat = torch.zeros(module.weight.numel(), dtype=module.weight.dtype, device=module.weight.device)
            fold(module, flat.index_put((module.gps_index,), module.gps_delta.detach()))
            remove_hooks(module, _gps_hook)
            drop_attributes(module, "gps_delta", "gps_index")
        return {"merged": True, "merged_layers": len(counts)}

    digest = selection_digest(selection)
    notes = {"per_neuron": k, "selection": data.describe(rule=f"top-{k} |d {hp.get('selection_loss', 'supcon')} / d W| per output neuron",
                                                         sha256=digest, weights=sum(counts.values()), per_layer=counts)}
    return Adaptation("gps", trainable, notes=notes, merge=merge, artifacts={"gps_selection.json": {"sha256": digest, "columns": selection}})

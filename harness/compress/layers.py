"""Which layers a compression touches, and which it declares dense.

Quantization and unstructured / N:M pruning act on the weight matrices of linear layers
(``nn.Linear`` and GPT-2's ``Conv1D``, whose weight is stored transposed). Left dense, as the
GPTQ / Wanda papers and PTQ-for-ViT work do: token and position embeddings, the patch embedding
(a convolution), normalisation layers, biases, the output head (``lm_head`` / ``head``) and the
output projection of ``nn.MultiheadAttention`` (called through a fused function, not as a module) —
declared by the name patterns below and recorded, and tested bit-identical to the dense model.
"""
from __future__ import annotations

import fnmatch
from typing import Any

DENSE_PATTERNS = ("*patch_embed*", "head", "head.*", "lm_head", "*.lm_head", "*embed_out*", "*wte*", "*wpe*", "*embed_tokens*", "*conv1")


def is_dense_name(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in DENSE_PATTERNS)


def is_linear(module) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"


def target_layers(model) -> list[tuple[str, Any]]:
    """(name, module) of every linear layer that is compressed, in forward (registration) order."""
    import torch

    # nn.MultiheadAttention (open_clip's towers) uses its out_proj weight inside a fused function, never
    # calling the module: calibration hooks cannot see its input, so it is kept dense (declared)
    fused = {f"{n}.out_proj" for n, m in model.named_modules() if isinstance(m, torch.nn.MultiheadAttention)}
    return [(n, m) for n, m in model.named_modules() if n and is_linear(m) and not is_dense_name(n) and n not in fused]


def weight_2d(module):
    """The weight as (out_features, in_features), a view (GPT-2's Conv1D stores (in, out))."""
    return module.weight.t() if type(module).__name__ == "Conv1D" else module.weight


def set_weight_2d(module, w2d) -> None:
    import torch

    with torch.no_grad():
        module.weight.copy_(w2d.t() if type(module).__name__ == "Conv1D" else w2d)


def in_features(module) -> int:
    return int(weight_2d(module).shape[1])

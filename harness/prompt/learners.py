"""The learners: what each method adds to the frozen towers, and nothing else.

A learner is an ``nn.Module`` holding only its own parameters (the towers are reached through
``self.towers``, not registered, so its state dict, its checkpoint and its optimizer are the
learner's alone). It turns image features (or images, when it prompts the image tower) and a
class list into logits; :meth:`Learner.loss` adds the method's regulariser. ``declared()`` names
the parameters that train: the engine trains exactly those, and the tests check that nothing else
receives a gradient.

Every width is read from the towers (text width, vision width, joint embedding), so one learner
runs on any open_clip model. Initialisations follow the references: context vectors N(0, 0.02)
or the init text's token embeddings; CoCoOp's meta-net E -> E/16 -> D; MaPLe's coupling functions
(one linear layer text -> vision, cloned per depth); PromptSRC's independent prompts N(0, 0.02);
CLIP-Adapter's bottleneck E -> E/4 -> E without biases.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import BobError
from .towers import Towers


@dataclass(frozen=True)
class ClassSet:
    """Class names in label order and the hand-made prompt templates (``{c}``) of their dataset."""

    names: tuple[str, ...]
    templates: tuple[str, ...]


def normalise(x):
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def hand_text_features(towers: Towers, classes: ClassSet, device, average: str = "normalised") -> torch.Tensor:
    """Frozen text features of the hand prompts (C, E), unit norm. ``average``: "normalised" = CLIP's
    protocol (normalise each prompt, average over templates, renormalise); "raw" = average the raw
    features, then normalise (PromptSRC's teacher)."""
    cache = towers.__dict__.setdefault("_hand_text", {})
    key = (classes, str(device), average)
    if key not in cache:
        with torch.no_grad():
            feats = torch.stack([towers.encode_text([t.replace("{c}", n) for t in classes.templates], device).float() for n in classes.names])
            cache[key] = normalise(normalise(feats).mean(1) if average == "normalised" else feats.mean(1))
    return cache[key]


class Learner(nn.Module):
    """Subclasses set ``prompts_vision`` when the image features depend on their parameters."""

    prompts_vision = False

    def __init__(self, towers: Towers, hp: dict[str, Any], train: ClassSet):
        super().__init__()
        self.__dict__["towers"] = towers  # not a submodule: the learner's state is its own parameters
        self.hp, self.train_classes = hp, train

    # -- what trains -----------------------------------------------------------------------------
    def declared(self) -> list[str]:
        return [n for n, _ in self.named_parameters()]

    # -- forward ---------------------------------------------------------------------------------------
    def image_features(self, images):
        return self.towers.encode_image(images)

    def logits_from_features(self, feats, classes: ClassSet):  # pragma: no cover - abstract
        raise NotImplementedError

    def logits(self, images, classes: ClassSet):
        feats = self.image_features(images)
        return self.logits_from_features(feats, classes)

    def loss(self, images, labels, feats=None):
        """The method's training loss on a batch (cross-entropy over the training classes by default)."""
        feats = self.image_features(images) if feats is None else feats
        return F.cross_entropy(self.logits_from_features(feats, self.train_classes), labels)

    # -- hooks the engine calls -------------------------------------------------------------------------
    def epoch_end(self, epoch: int, epochs: int) -> None:
        """After each epoch's last step (``epoch`` from 1)."""

    def finish(self, epochs: int) -> dict[str, Any]:
        """After training; returns notes for the record."""
        return {}


class ZeroShot(Learner):
    """CLIP with the dataset's hand-made prompt: nothing trains."""

    def logits_from_features(self, feats, classes):
        return self.towers.logit_scale() * normalise(feats.float()) @ hand_text_features(self.towers, classes, feats.device).T


# -- text context (CoOp, KgCoOp, CoCoOp, TPT) -----------------------------------------------------------
POSITIONS = ("end", "middle", "front")


class TextContext(nn.Module):
    """CoOp's learned context: ``n_ctx`` vectors of the text width (one set, or one per class with
    ``csc``), initialised from the token embeddings of ``init`` or N(0, 0.02). The prompt text is
    ``init`` (or ``X`` x n_ctx) followed by the class name; the vectors replace its first n_ctx tokens."""

    def __init__(self, towers: Towers, n_ctx: int | None, init: str, csc: bool = False, n_cls: int = 0, position: str = "end", method: str = "coop"):
        super().__init__()
        init = (init or "").replace("_", " ").strip()
        if position not in POSITIONS:
            raise BobError(f"method {method}: class_token_position={position!r} is not one of {', '.join(POSITIONS)}")
        width = towers.text_width
        if init:
            available = towers.n_tokens(init)
            n_ctx = int(n_ctx or available)
            if n_ctx > available:
                raise BobError(f"method {method}: n_ctx={n_ctx} but ctx_init={init!r} has {available} tokens; give n_ctx <= {available} or a longer init")
            tokens = towers.tokenize([init])
            with torch.no_grad():
                vectors = towers.token_embedding(tokens)[0, towers.prefix_len:towers.prefix_len + n_ctx].detach().clone().float()
            if csc:
                vectors = vectors.unsqueeze(0).repeat(n_cls, 1, 1)
            self.prefix = init
        else:
            n_ctx = int(n_ctx or 16)
            vectors = torch.empty(n_cls, n_ctx, width) if csc else torch.empty(n_ctx, width)
            nn.init.normal_(vectors, std=0.02)
            self.prefix = " ".join(["X"] * n_ctx)
        if n_ctx < 1:
            raise BobError(f"method {method}: n_ctx={n_ctx} must be at least 1")
        self.ctx = nn.Parameter(vectors)
        self.n_ctx, self.csc, self.position, self.method = n_ctx, csc, position, method

    def embeddings(self, ct, ctx=None):
        """Prompt token embeddings (C, L, D) for the classes of ``ct`` (``ctx``: a per-image context)."""
        ctx = self.ctx if ctx is None else ctx
        n_cls, s, n = len(ct.names), ct.start, self.n_ctx
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(n_cls, -1, -1)
        elif ctx.shape[0] != n_cls:
            raise BobError(f"method {self.method}: class-specific context (csc) was learned for {ctx.shape[0]} classes and cannot classify "
                           f"{n_cls} others; use csc=false for protocols that evaluate unseen classes")
        emb = ct.embeddings.to(ctx.dtype)
        prefix, suffix = emb[:, :s], emb[:, s + n:]
        if self.position == "end":
            return torch.cat([prefix, ctx, suffix], dim=1)
        rows = []
        for i in range(n_cls):
            k = ct.name_lens[i]
            name, rest = suffix[i:i + 1, :k], suffix[i:i + 1, k:]
            if self.position == "middle":
                half = n // 2
                rows.append(torch.cat([prefix[i:i + 1], ctx[i:i + 1, :half], name, ctx[i:i + 1, half:], rest], dim=1))
            else:
                rows.append(torch.cat([prefix[i:i + 1], name, ctx[i:i + 1], rest], dim=1))
        return torch.cat(rows, dim=0)


class CoOp(Learner):
    """Learned context vectors in the text tower; image features untouched."""

    def __init__(self, towers, hp, train):
        super().__init__(towers, hp, train)
        self.prompt = TextContext(towers, hp.get("n_ctx"), hp.get("ctx_init") or "", bool(hp.get("csc")), len(train.names),
                                  str(hp.get("class_token_position", "end")), hp.get("method", "coop"))

    def text_features(self, classes: ClassSet, ctx=None):
        ct = self.towers.class_text(list(classes.names), self.prompt.prefix, self.prompt.ctx.device)
        return self.towers.encode_text_embeddings(self.prompt.embeddings(ct, ctx), ct.tokens)

    def logits_from_features(self, feats, classes):
        return self.towers.logit_scale() * normalise(feats.float()) @ normalise(self.text_features(classes).float()).T


class KgCoOp(CoOp):
    """CoOp + lambda * (1 - mean cosine) between the learned class texts and the hand-prompt ones."""

    def loss(self, images, labels, feats=None):
        feats = self.image_features(images) if feats is None else feats
        text = normalise(self.text_features(self.train_classes).float())
        hand = hand_text_features(self.towers, self.train_classes, text.device)
        ce = F.cross_entropy(self.towers.logit_scale() * normalise(feats.float()) @ text.T, labels)
        return ce + float(self.hp["kg_weight"]) * (1.0 - F.cosine_similarity(text, hand, dim=1, eps=1e-7).mean())


class CoCoOp(CoOp):
    """CoOp's context shifted per image by a meta-net of the (normalised) image feature."""

    def __init__(self, towers, hp, train):
        super().__init__(towers, hp, train)
        dim = towers.embed_dim
        self.meta_net = nn.Sequential(nn.Linear(dim, dim // 16), nn.ReLU(inplace=True), nn.Linear(dim // 16, towers.text_width))

    def logits_from_features(self, feats, classes):
        f = normalise(feats.float())
        shifts = self.meta_net(f)
        ct = self.towers.class_text(list(classes.names), self.prompt.prefix, f.device)
        scale = self.towers.logit_scale()
        rows = []
        for i in range(len(f)):
            text = self.towers.encode_text_embeddings(self.prompt.embeddings(ct, self.prompt.ctx + shifts[i]), ct.tokens)
            rows.append(scale * f[i] @ normalise(text.float()).T)
        return torch.stack(rows)


# -- deep prompts in both towers (MaPLe, PromptSRC) ---------------------------------------------------------------
def _depth(towers: Towers, depth: int, method: str, which: str = "") -> int:
    limit = min(towers.text_layers, towers.vision_layers) if not which else (towers.text_layers if which == "text" else towers.vision_layers)
    if not isinstance(depth, int) or depth < 1 or depth > limit:
        raise BobError(f"method {method}: prompt depth{(' ' + which) if which else ''}={depth!r} must be an integer from 1 to {limit} "
                       f"(the {'towers have' if not which else which + ' tower has'} {limit} blocks)")
    return depth


class MaPLe(Learner):
    """Multi-modal prompts: text context at the input and new text prompts at blocks 1..depth-1,
    each projected to the image tower by its own coupling function (linear text -> vision width)."""

    prompts_vision = True

    def __init__(self, towers, hp, train):
        super().__init__(towers, hp, train)
        towers.require_vit("maple")
        depth = _depth(towers, int(hp["depth"]), "maple")
        self.prompt = TextContext(towers, int(hp["n_ctx"]), hp.get("ctx_init") or "", method="maple")
        tw, vw, n = towers.text_width, towers.vision_width, self.prompt.n_ctx
        self.proj = nn.Linear(tw, vw)
        self.deep_text = nn.ParameterList([nn.Parameter(torch.empty(n, tw).normal_(std=0.02)) for _ in range(depth - 1)])
        layer = nn.Linear(tw, vw)
        self.deep_proj = nn.ModuleList([copy.deepcopy(layer) for _ in range(depth - 1)])  # clones, as the reference's _get_clones

    def image_features(self, images):
        return self.towers.encode_image(images, self.proj(self.prompt.ctx), [p(d) for p, d in zip(self.deep_proj, self.deep_text)])

    def logits_from_features(self, feats, classes):
        ct = self.towers.class_text(list(classes.names), self.prompt.prefix, feats.device)
        text = self.towers.encode_text_embeddings(self.prompt.embeddings(ct), ct.tokens, list(self.deep_text), ct.start, self.prompt.n_ctx)
        return self.towers.logit_scale() * normalise(feats.float()) @ normalise(text.float()).T


class PromptSRC(Learner):
    """Independent deep prompts in both towers (IVLP), trained with PromptSRC's self-regularisers:
    L1 to the frozen model's template-ensemble text features and image features, KL to its logits;
    the final prompts are a Gaussian-weighted average over epochs (GPA)."""

    prompts_vision = True

    def __init__(self, towers, hp, train):
        super().__init__(towers, hp, train)
        towers.require_vit("promptsrc")
        dt, dv = _depth(towers, int(hp["depth_text"]), "promptsrc", "text"), _depth(towers, int(hp["depth_vision"]), "promptsrc", "vision")
        self.prompt = TextContext(towers, int(hp["n_ctx_text"]), hp.get("ctx_init") or "", method="promptsrc")
        tw, vw, n = towers.text_width, towers.vision_width, self.prompt.n_ctx
        nv = int(hp["n_ctx_vision"])
        self.deep_text = nn.ParameterList([nn.Parameter(torch.empty(n, tw).normal_(std=0.02)) for _ in range(dt - 1)])
        self.vpt = nn.Parameter(torch.empty(nv, vw).normal_(std=0.02))
        self.deep_vision = nn.ParameterList([nn.Parameter(torch.empty(nv, vw).normal_(std=0.02)) for _ in range(dv - 1)])
        self.gpa_weights: list[float] = []
        if hp.get("gpa"):
            epochs, mean, std = int(hp["epochs"]), float(hp["gpa_mean"]), float(hp["gpa_std"])
            g = [math.exp(-0.5 * ((e - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi)) for e in range(1, epochs + 1)]
            self.gpa_weights = [w / sum(g) for w in g] if sum(g) > 0 else [0.0] * (epochs - 1) + [1.0]
            for name, p in self.named_parameters():  # the running aggregate is state: it is checkpointed with the learner
                self.register_buffer("gpa__" + name.replace(".", "__"), torch.zeros_like(p))

    def image_features(self, images):
        return self.towers.encode_image(images, self.vpt, list(self.deep_vision))

    def text_features(self, classes):
        ct = self.towers.class_text(list(classes.names), self.prompt.prefix, self.vpt.device)
        return self.towers.encode_text_embeddings(self.prompt.embeddings(ct), ct.tokens, list(self.deep_text), ct.start, self.prompt.n_ctx)

    def logits_from_features(self, feats, classes):
        return self.towers.logit_scale() * normalise(feats.float()) @ normalise(self.text_features(classes).float()).T

    def teacher_text(self, device):
        """The frozen model's text features of the training classes over CLIP's first 60 ImageNet templates
        (PromptSRC's list), averaged raw and normalised, as the reference."""
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

        templates = tuple(t("{c}") for t in OPENAI_IMAGENET_TEMPLATES[:60])
        return hand_text_features(self.towers, ClassSet(self.train_classes.names, templates), device, average="raw")

    def loss(self, images, labels, feats=None):
        scale = self.towers.logit_scale()
        img = normalise(self.image_features(images).float())
        text = normalise(self.text_features(self.train_classes).float())
        logits = scale * img @ text.T
        teacher_text = self.teacher_text(img.device)
        with torch.no_grad():
            zs_img = normalise(self.towers.encode_image(images).float())
            zs_logits = scale * zs_img @ teacher_text.T
        ce = F.cross_entropy(logits, labels)
        l_text = F.l1_loss(text, teacher_text, reduction="mean") * float(self.hp["text_weight"])
        l_image = F.l1_loss(img, zs_img, reduction="mean") * float(self.hp["image_weight"])
        l_logits = F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(zs_logits, dim=1), reduction="sum", log_target=True) / logits.numel()
        return ce + l_text + l_image + l_logits

    def epoch_end(self, epoch, epochs):
        if not self.gpa_weights:
            return
        w = self.gpa_weights[epoch - 1]
        with torch.no_grad():
            for name, p in self.named_parameters():
                getattr(self, "gpa__" + name.replace(".", "__")).add_(w * p)

    def finish(self, epochs):
        if not self.gpa_weights:
            return {}
        with torch.no_grad():
            for name, p in self.named_parameters():
                p.copy_(getattr(self, "gpa__" + name.replace(".", "__")))
        return {"gpa": {"mean": self.hp["gpa_mean"], "std": self.hp["gpa_std"], "weights": [round(w, 6) for w in self.gpa_weights]}}


# -- adapters on the image features -----------------------------------------------------------------------------------
class CLIPAdapter(Learner):
    """A residual bottleneck on the image feature: x = r * A(f) + (1 - r) * f; hand-prompt text."""

    def __init__(self, towers, hp, train):
        super().__init__(towers, hp, train)
        dim, reduction = towers.embed_dim, int(hp["reduction"])
        self.adapter = nn.Sequential(nn.Linear(dim, dim // reduction, bias=False), nn.ReLU(inplace=True),
                                     nn.Linear(dim // reduction, dim, bias=False), nn.ReLU(inplace=True))

    def logits_from_features(self, feats, classes):
        f = feats.float()
        r = float(self.hp["ratio"])
        x = r * self.adapter(f) + (1 - r) * f
        return self.towers.logit_scale() * normalise(x) @ hand_text_features(self.towers, classes, f.device).T


class TipAdapterF(Learner):
    """Tip-Adapter's cache with learnable keys (Tip-Adapter-F): logits = CLIP's + alpha * exp(-beta (1 - f k^T)) v,
    keys initialised from the cached training features, values the one-hot training labels."""

    def __init__(self, towers, hp, train, keys=None, values=None):
        super().__init__(towers, hp, train)
        self.keys = nn.Parameter(keys.clone().float())
        self.register_buffer("values", values.clone().float())
        self.alpha, self.beta = float(hp["init_alpha"]), float(hp["init_beta"])

    def logits_from_features(self, feats, classes, alpha=None, beta=None, class_map=None):
        from .tip import tip_logits

        f = normalise(feats.float())
        clip_logits = self.towers.logit_scale() * f @ hand_text_features(self.towers, classes, f.device).T
        return tip_logits(clip_logits, f @ self.keys.T, self.values, self.alpha if alpha is None else alpha, self.beta if beta is None else beta,
                          class_map)

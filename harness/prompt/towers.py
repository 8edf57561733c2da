"""An open_clip model's two towers, in the pieces prompt learners work with.

Prompt learners put learned vectors where tokens were (the text tower) or beside the patch tokens
(the image tower), so they need the towers' inside: token embeddings, the block list, the
attention mask, the pooling and the projection. open_clip keeps those in two layouts: ``CLIP``
(the text tower's modules on the model itself) and ``CustomTextCLIP`` (``model.text``, a
``TextTransformer``); both run batch-first blocks. :class:`Towers` reads either, takes every width
from the modules (never a constant: the reference forks hard-code 512 / 768 / 1024) and refuses,
in one line, towers it cannot prompt (a Hugging Face text encoder, CoCa's appended class token,
a non-ViT image tower for vision prompts).

Nothing here changes the model: the towers are frozen (``requires_grad`` off, eval mode) and
:func:`state_sha256` lets a test and the record prove they end the cell as they began.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any

from ..errors import BobError


def state_sha256(module) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes, bytes), in name order."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class ClassText:
    """The tokenized prompts ``"<prefix words> <class name>."`` of one class list and their (frozen)
    token embeddings; learned vectors replace positions ``start .. start + n_ctx``."""

    names: tuple[str, ...]
    tokens: Any  # LongTensor (C, L)
    embeddings: Any  # (C, L, D)
    name_lens: list[int]
    start: int


class Towers:
    """The frozen open_clip model ``clip`` with its tokenizer (``backbone`` names it in errors)."""

    def __init__(self, clip, tokenizer, backbone: str = "the backbone"):
        self.clip, self.tokenizer, self.backbone = clip, tokenizer, backbone
        text = getattr(clip, "text", None)
        self.pad_mask = False
        if text is not None:  # CustomTextCLIP
            from open_clip.transformer import TextTransformer

            if not isinstance(text, TextTransformer):
                raise BobError(f"{backbone}: prompt learning needs open_clip's own text transformer; this model's text tower is "
                               f"{type(text).__name__} (a Hugging Face encoder), whose token embeddings it cannot reach")
            if getattr(text, "cls_emb", None) is not None:
                raise BobError(f"{backbone}: its text tower appends a class token (CoCa); prompt learning supports CLIP-style text towers")
            src, self.pool_type, self.eos_id, self.attn_mask = text, text.pool_type, getattr(text, "eos_id", None), text.attn_mask
            self.pad_mask, self.pad_id, self.heads, self._text = bool(text.use_pad_mask), text.pad_id, text.heads, text
        elif hasattr(clip, "token_embedding"):
            src, self.pool_type, self.eos_id, self.attn_mask = clip, clip.text_pool_type, getattr(clip, "text_eos_id", None), clip.attn_mask
        else:
            raise BobError(f"{backbone} has no open_clip text tower; prompt-learning methods need a vision-language backbone (openclip:...)")
        self.token_embedding, self.positional_embedding = src.token_embedding, src.positional_embedding
        self.transformer, self.ln_final, self.text_projection = src.transformer, src.ln_final, src.text_projection
        self.visual = clip.visual
        clip.requires_grad_(False)
        clip.eval()
        self._class_text: dict[tuple, ClassText] = {}

    # -- widths (read from the modules) -----------------------------------------------------------
    @property
    def text_width(self) -> int:
        return int(self.token_embedding.embedding_dim)

    @property
    def embed_dim(self) -> int:
        proj = self.text_projection
        if proj is None:
            return self.text_width
        return int(proj.out_features if hasattr(proj, "out_features") else proj.shape[1])

    @property
    def vision_width(self) -> int | None:
        """The image transformer's token width (None: not a ViT, so no vision prompts)."""
        v = self.visual
        if all(hasattr(v, a) for a in ("_embeds", "_pool", "transformer", "conv1")) and hasattr(v.transformer, "resblocks"):
            return int(v.conv1.out_channels)
        return None

    @property
    def text_layers(self) -> int:
        return len(self.transformer.resblocks)

    @property
    def vision_layers(self) -> int:
        return len(self.visual.transformer.resblocks) if self.vision_width else 0

    def logit_scale(self) -> float:
        """CLIP's learned temperature, exp(logit_scale) (about 100 for the released models)."""
        return float(self.clip.logit_scale.detach().exp().reshape(-1)[0])

    def require_vit(self, method: str) -> None:
        if self.vision_width is None:
            raise BobError(f"method {method} puts prompts into the image transformer; {self.backbone}'s image tower is "
                           f"{type(self.visual).__name__}, not an open_clip VisionTransformer (use a ViT model, or a text-side method such as coop)")

    # -- tokens -------------------------------------------------------------------------------------
    def tokenize(self, texts: list[str]):
        return self.tokenizer(list(texts))

    @functools.cached_property
    def prefix_len(self) -> int:
        """Positions before the first word (1 for CLIP's start-of-text token, 0 for tokenizers without one)."""
        empty, word = self.tokenize([""])[0], self.tokenize(["X"])[0]
        return int(next(i for i in range(len(word)) if int(empty[i]) != int(word[i])))

    def n_tokens(self, text: str) -> int:
        """How many tokens ``text`` takes (without start / end tokens)."""
        return int((self.tokenize([text])[0] != 0).sum()) - int((self.tokenize([""])[0] != 0).sum())

    def class_text(self, names: list[str], prefix: str, device) -> ClassText:
        """Tokenized ``"<prefix> <name>."`` for every class, embedded (cached per class list and prefix)."""
        import torch

        key = (tuple(names), prefix, str(device))
        if key not in self._class_text:
            prompts = [f"{prefix} {n}." if prefix else f"{n}." for n in names]
            tokens = self.tokenize(prompts).to(device)
            with torch.no_grad():
                emb = self.token_embedding(tokens)
            self._class_text[key] = ClassText(tuple(names), tokens, emb, [self.n_tokens(n) for n in names], self.prefix_len)
        return self._class_text[key]

    # -- the text tower from embeddings ---------------------------------------------------------------------
    def encode_text_embeddings(self, x, tokens, deep: list | None = None, ctx_start: int = 1, n_ctx: int = 0):
        """Text features of token embeddings ``x`` (N, L, D) whose ids are ``tokens`` (for pooling);
        ``deep[i]`` (n_ctx, D) replaces positions ``ctx_start .. ctx_start + n_ctx`` before block i + 1."""
        import torch
        from open_clip.transformer import text_global_pool

        cast = self.transformer.get_cast_dtype()
        length = x.shape[1]
        x = x.to(cast) + self.positional_embedding[:length].to(cast)
        mask = self.attn_mask[:length, :length] if self.attn_mask is not None else None
        if self.pad_mask:
            pad = self._text._build_additive_mask(tokens, length, x.dtype)
            mask = pad if mask is None else mask.unsqueeze(0) + pad
        batch_first = getattr(self.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        for i, block in enumerate(self.transformer.resblocks):
            if deep and 1 <= i <= len(deep):
                prompt = deep[i - 1].to(x.dtype)
                if batch_first:
                    x = torch.cat([x[:, :ctx_start], prompt.unsqueeze(0).expand(x.shape[0], -1, -1), x[:, ctx_start + n_ctx:]], dim=1)
                else:
                    x = torch.cat([x[:ctx_start], prompt.unsqueeze(1).expand(-1, x.shape[1], -1), x[ctx_start + n_ctx:]], dim=0)
            x = block(x, attn_mask=mask)
        if not batch_first:
            x = x.transpose(0, 1)
        x = self.ln_final(x)
        pooled = text_global_pool(x, tokens, self.pool_type, eos_token_id=self.eos_id)
        proj = self.text_projection
        if proj is not None:
            pooled = proj(pooled) if isinstance(proj, torch.nn.Linear) else pooled @ proj
        return pooled

    def encode_text(self, texts: list[str], device):
        """Plain text features of ``texts`` (the frozen tower: what zero-shot CLIP uses)."""
        tokens = self.tokenize(texts).to(device)
        return self.encode_text_embeddings(self.token_embedding(tokens), tokens)

    # -- the image tower with prompt tokens ------------------------------------------------------------------
    def encode_image(self, images, shallow=None, deep: list | None = None):
        """Image features; with ``shallow`` (n, W) prompt tokens appended to the patch tokens at the
        input (through ``ln_pre``, as the references add them before it) and ``deep[i]`` replacing them
        before block i + 1. Prompt tokens are dropped before pooling, so the pooled token(s) are the
        ones the tower pools without prompts."""
        import torch

        if shallow is None:
            return self.visual(images)
        v = self.visual
        x = v._embeds(images)
        n = shallow.shape[0]
        x = torch.cat([x, v.ln_pre(shallow.to(x.dtype)).unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
        batch_first = getattr(v.transformer, "batch_first", True)
        for i, block in enumerate(v.transformer.resblocks):
            if deep and 1 <= i <= len(deep):
                x = torch.cat([x[:, :-n], deep[i - 1].to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
            x = block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)
        pooled, _ = v._pool(x[:, :-n])
        if v.proj is not None:
            pooled = pooled @ v.proj
        return pooled

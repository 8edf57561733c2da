"""Scoring text with a causal language model: the one place bob turns tokens into log-probabilities.

Every LM task (bob's bias scorers, lm-eval's tasks through ``tasks.lmeval.BobLM``) and every LM
method (zero-shot, few-shot, soft prompt, LoRA) scores through :class:`LMScorer`, so a number from
``bias/crows_pairs`` and one from ``lmeval:crows_pairs_english`` come from the same code.

Conventions are lm-eval's (``HFLM``), so the two agree token for token: a context and continuation
are tokenised as ``whole = tok(context + continuation)``, ``continuation = whole[len(tok(context)):]``
(trailing spaces of the context move to the continuation); an empty context is the model's BOS
token (EOS where there is none); no special tokens are added otherwise. A prompt longer than the
model's context is an error, never silently truncated: a truncated prompt scores another text.

``prefix_tokens``: a soft-prompted model (peft prompt tuning) returns logits for its virtual
tokens too; they are dropped here, so positions line up with the input ids.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .errors import BobError


class LMScorer:
    def __init__(self, model, tokenizer, device: str, max_length: int, *, batch_size: int = 16, prefix_tokens: int = 0, name: str = ""):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.max_length = int(max_length)
        self.batch_size = max(1, int(batch_size))
        self.prefix_tokens = int(prefix_tokens)
        self.name = name

    # -- tokens ------------------------------------------------------------------------------
    @property
    def prefix_token_id(self) -> int:
        tok = self.tokenizer
        for tid in (tok.bos_token_id, tok.eos_token_id):
            if tid is not None:
                return int(tid)
        raise BobError(f"the tokenizer of {self.name} has neither a BOS nor an EOS token; an empty context cannot be scored")

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if context == "":
            return [self.prefix_token_id], self.encode(continuation)
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation, context = context[-n_spaces:] + continuation, context[:-n_spaces]
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        return ctx, whole[len(ctx):]

    @property
    def room(self) -> int:
        """Tokens the model may see (its context minus the soft prompt's virtual tokens)."""
        return self.max_length - self.prefix_tokens

    def check_length(self, n_tokens: int, what: str) -> None:
        if n_tokens > self.room:
            virtual = f" ({self.prefix_tokens} of them taken by the soft prompt)" if self.prefix_tokens else ""
            raise BobError(f"{what} is {n_tokens} tokens, longer than the context of {self.name} ({self.max_length} tokens{virtual}); "
                           "shorten the input, lower num_fewshot, or use a model with a longer context")

    # -- forward ------------------------------------------------------------------------------
    def logits(self, rows: Sequence[Sequence[int]], grad: bool = False):
        """Logits (B, T, V) for right-padded rows, aligned with the input ids (virtual tokens dropped)."""
        import torch

        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
            mask[i, : len(r)] = 1
        with torch.set_grad_enabled(grad):
            out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
        logits = out.logits if hasattr(out, "logits") else out[0]
        return logits[:, self.prefix_tokens:, :].float()

    def _batches(self, items: list, key) -> Any:
        """Longest first (a memory error shows up on the first batch), original order restored by the caller."""
        order = sorted(range(len(items)), key=lambda i: -key(items[i]))
        for s in range(0, len(order), self.batch_size):
            yield order[s : s + self.batch_size]

    # -- the scores ---------------------------------------------------------------------------
    def loglikelihood(self, pairs: Sequence[tuple[str, str]], desc: str = "log-likelihood") -> list[tuple[float, bool, int]]:
        """(sum of log p(continuation | context), continuation is the greedy one, its token count) per pair."""
        import torch

        from .progress import progress

        encoded = []
        for i, (context, continuation) in enumerate(pairs):
            ctx, cont = self.encode_pair(context, continuation)
            if not cont:
                raise BobError(f"{desc}: item {i} has an empty continuation (context {context[:60]!r}); every choice needs text")
            self.check_length(len(ctx) + len(cont) - 1, f"{desc}: item {i} ({(context + continuation)[:60]!r}...)")
            encoded.append((ctx, cont))
        out: list[Any] = [None] * len(encoded)
        batches = list(self._batches(encoded, lambda e: len(e[0]) + len(e[1])))
        for batch in progress(batches, desc=desc, total=len(batches)):
            rows = [(encoded[i][0] + encoded[i][1])[:-1] for i in batch]
            logprobs = torch.log_softmax(self.logits(rows), dim=-1)
            for row, i in enumerate(batch):
                ctx, cont = encoded[i]
                start = len(ctx) - 1
                lp = logprobs[row, start : start + len(cont)]
                target = torch.tensor(cont, dtype=torch.long, device=lp.device)
                total = lp.gather(1, target[:, None]).sum().item()
                greedy = bool((lp.argmax(dim=-1) == target).all().item())
                out[i] = (float(total), greedy, len(cont))
        return out

    def sentence_scores(self, texts: Sequence[str], contexts: Sequence[str] | None = None, desc: str = "sentences") -> np.ndarray:
        """Mean per-token log-probability of each text (given its context, or the BOS token)."""
        pairs = [((contexts[i] if contexts is not None else ""), t) for i, t in enumerate(texts)]
        return np.array([ll / n for ll, _, n in self.loglikelihood(pairs, desc=desc)])

    def rolling_loglikelihood(self, texts: Sequence[str], desc: str = "rolling log-likelihood") -> list[float]:
        """Log-likelihood of whole texts (lm-eval's ``loglikelihood_rolling``): disjoint windows of the
        context size, each token predicted from as many preceding tokens as fit (BOS before the first)."""
        out = []
        for text in texts:
            tokens = self.encode(text)
            total = 0.0
            for start in range(0, len(tokens), self.room):
                total += self._score_tokens([self.prefix_token_id] + tokens[:start], tokens[start : start + self.room])
            out.append(total)
        return out

    def _score_tokens(self, context: list[int], continuation: list[int]) -> float:
        """log p(continuation | the end of context that fits in the window)."""
        import torch

        row = (context + continuation)[-(self.room + 1):][:-1]
        logprobs = torch.log_softmax(self.logits([row]), dim=-1)[0]
        n = len(continuation)
        lp = logprobs[len(row) - n : len(row)]
        return float(lp.gather(1, torch.tensor(continuation)[:, None].to(lp.device)).sum())

    def last_position_logits(self, prompts: Sequence[str], token_ids: Sequence[int], grad: bool = False, desc: str = "prompts"):
        """Logits of ``token_ids`` at each prompt's last position (B, len(token_ids)): a verbalizer's
        class scores. With ``grad`` the result keeps its graph (soft-prompt and LoRA training)."""
        import torch

        rows = []
        for i, prompt in enumerate(prompts):
            ids = self.encode(prompt)
            if not ids:
                raise BobError(f"{desc}: prompt {i} is empty")
            self.check_length(len(ids), f"{desc}: prompt {i} ({prompt[:60]!r}...)")
            rows.append(ids)
        logits = self.logits(rows, grad=grad)
        last = torch.tensor([len(r) - 1 for r in rows], device=logits.device)
        picked = logits[torch.arange(len(rows), device=logits.device), last]
        return picked[:, torch.tensor(list(token_ids), device=logits.device)]

    def classify(self, prompts: Sequence[str], token_ids: Sequence[int], desc: str = "classify") -> np.ndarray:
        """Class scores (N, C) for many prompts, batched, without gradients."""
        from .progress import progress

        out = np.zeros((len(prompts), len(token_ids)), dtype=np.float64)
        batches = list(self._batches(list(prompts), len))
        for batch in progress(batches, desc=desc, total=len(batches)):
            out[batch] = self.last_position_logits([prompts[i] for i in batch], token_ids, desc=desc).cpu().numpy()
        return out

    def generate(self, prompts: Sequence[str], until: Sequence[str], max_new_tokens: int = 64) -> list[str]:
        """Greedy continuations, cut at the first stop string (lm-eval's ``generate_until``)."""
        import torch

        outs = []
        for prompt in prompts:
            ids = self.encode(prompt) or [self.prefix_token_id]
            self.check_length(len(ids) + max_new_tokens, f"generation prompt ({prompt[:60]!r}...) plus {max_new_tokens} new tokens")
            generated: list[int] = []
            for _ in range(max_new_tokens):  # plain greedy loop: works for peft-wrapped and soft-prompted models alike
                with torch.no_grad():
                    nxt = int(self.logits([ids + generated])[0, -1].argmax())
                if nxt == self.tokenizer.eos_token_id:
                    break
                generated.append(nxt)
                text = self.tokenizer.decode(generated)
                if any(s in text for s in until):
                    break
            text = self.tokenizer.decode(generated)
            for stop in until:
                text = text.split(stop)[0] if stop else text
            outs.append(text)
        return outs

    def label_token_ids(self, words: Sequence[str]) -> list[int]:
        """The verbalizer: the first token of each label word (with a leading space, as it follows a colon)."""
        ids = []
        for w in words:
            toks = self.encode(" " + w.strip())
            if not toks:
                raise BobError(f"label word {w!r} encodes to no tokens; choose other label words with --set verbalizer=...")
            ids.append(toks[0])
        if len(set(ids)) != len(ids):
            raise BobError(f"label words {list(words)} share a first token under {self.name}'s tokenizer; choose label words that "
                           "start differently with --set verbalizer=neg,neu,pos (or longer words)")
        return ids

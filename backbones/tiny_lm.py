"""``tinylm:gpt2``, ``tinylm:opt``, ``tinylm:llama``: tiny causal LMs of three architectures, made here.

Each is a real ``save_pretrained`` folder (config, a byte-level BPE tokenizer trained locally with
``tokenizers`` on the toy corpus of ``tasks/bias_toy.py``, and weights) and loads through the same
``hf:`` code as any hub model, so the quickstart bias grid and the tests exercise the real path.
``--weights pretrained`` = briefly trained on the toy corpus when the folder is first written
(deterministic; seconds on a CPU), ``random`` = built from the config.
"""
from __future__ import annotations

import os
from pathlib import Path

from harness.errors import BobError
from harness.registry import BACKBONES

VERSION = 1
ARCHS = ("gpt2", "opt", "llama")
WIDTH, LAYERS, HEADS, CONTEXT, VOCAB = 64, 2, 2, 256, 400
PRETRAIN_STEPS, PRETRAIN_BATCH = 1000, 32


def tiny_lm_root() -> Path:
    """``$BOB_TINYLM_DIR`` (shared by several caches, e.g. a test session), else under ``$BOB_CACHE``."""
    if os.environ.get("BOB_TINYLM_DIR"):
        return Path(os.environ["BOB_TINYLM_DIR"]) / f"tinylm-v{VERSION}"
    return Path(os.environ.get("BOB_CACHE", Path.home() / ".cache" / "bob")) / "models" / f"tinylm-v{VERSION}"


def train_tokenizer(lines: list[str], vocab_size: int = VOCAB):
    """A byte-level BPE (GPT-2's scheme) trained on ``lines``, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(lines, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")


def make_config(arch: str, vocab_size: int, eos: int):
    import transformers

    if arch == "gpt2":
        return transformers.GPT2Config(vocab_size=vocab_size, n_positions=CONTEXT, n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS,
                                       bos_token_id=eos, eos_token_id=eos)
    if arch == "opt":
        return transformers.OPTConfig(vocab_size=vocab_size, max_position_embeddings=CONTEXT, hidden_size=WIDTH, num_hidden_layers=LAYERS,
                                      num_attention_heads=HEADS, ffn_dim=4 * WIDTH, word_embed_proj_dim=WIDTH, bos_token_id=eos,
                                      eos_token_id=eos, pad_token_id=eos)
    if arch == "llama":
        return transformers.LlamaConfig(vocab_size=vocab_size, max_position_embeddings=CONTEXT, hidden_size=WIDTH, intermediate_size=2 * WIDTH,
                                        num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=HEADS, bos_token_id=eos,
                                        eos_token_id=eos, pad_token_id=eos)
    raise BobError(f"unknown tiny LM architecture {arch!r}; known: {', '.join(ARCHS)}")


def pretrain(model, tokenizer, lines: list[str], steps: int = PRETRAIN_STEPS, seed: int = 0) -> list[float]:
    """Next-token training on the corpus (deterministic). Returns the loss every 50 steps."""
    import random

    import torch

    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    eos = tokenizer.eos_token_id
    losses = []
    model.train()
    for step in range(steps):
        batch = [[eos] + tokenizer(rng.choice(lines), add_special_tokens=False)["input_ids"][: CONTEXT - 2] + [eos] for _ in range(PRETRAIN_BATCH)]
        width = max(map(len, batch))
        ids = torch.full((len(batch), width), eos)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, row in enumerate(batch):
            ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            losses.append(round(float(loss.detach()), 4))
    model.eval()
    return losses


def write_tiny_lm(arch: str, folder: Path, lines: list[str]) -> None:
    import json

    import torch

    from .hf_lm import _transformers

    transformers = _transformers()  # quiet: no per-file progress bars
    tokenizer = train_tokenizer(lines)
    config = make_config(arch, len(tokenizer), tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    losses = pretrain(model, tokenizer, lines)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "bob_pretraining.json").write_text(json.dumps({"corpus": "bob bias toy corpus", "steps": PRETRAIN_STEPS, "batch": PRETRAIN_BATCH,
                                                             "loss_every_50_steps": losses}, indent=1))


def ensure_tiny_lm(arch: str) -> Path:
    """The model folder, written once (atomically: a half-written folder is never visible)."""
    from harness.atomic import generated_folder
    from tasks.bias_toy import ensure_toy_data, read_corpus

    if arch not in ARCHS:
        raise BobError(f"unknown tiny LM architecture {arch!r}; known: {', '.join(ARCHS)}")
    folder = tiny_lm_root() / arch
    if (folder / "config.json").is_file():
        return folder
    lines = read_corpus(ensure_toy_data())
    import sys

    print(f"writing the tiny LM tinylm:{arch} into {folder} (once; ~15 s on a CPU)", file=sys.stderr)
    return generated_folder(folder, "config.json", lambda tmp: write_tiny_lm(arch, tmp, lines), f"tiny LM {arch}")


def _factory(arch: str):
    def factory(weights: str = "pretrained", seed: int = 0, img_size: int | None = None):
        from .hf_lm import load_causal_lm

        folder = ensure_tiny_lm(arch)
        backbone = load_causal_lm(f"hf:{folder}", weights, seed, display_name=f"tinylm:{arch}")
        backbone.meta.update({"family": arch, "architecture": f"hf:{arch}"})
        if backbone.meta.get("weights") == "pretrained":
            backbone.meta["pretrain_data"] = "bob bias toy corpus (tasks/bias_toy.py)"
        return backbone

    return factory


for _arch in ARCHS:
    BACKBONES.add(f"tinylm:{_arch}", _factory(_arch), source="hf", family=_arch, architecture=f"hf:{_arch}", pretrain_method="causal language modelling",
                  pretrain_data="bob bias toy corpus (tasks/bias_toy.py)", capabilities=["text", "causal-lm"], context_length=CONTEXT,
                  description=f"tiny {_arch}-architecture LM ({LAYERS} layers, width {WIDTH}) made locally; for tests and the bias quickstart")

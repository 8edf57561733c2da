"""An hf: language model too large for one GPU is spread over the cell's GPUs (accelerate's
device_map) in one process, and the record says how. No GPU here: the plan is computed for two
GPUs of a given size, a dispatched model (accelerate's hooks moving weights between devices) must
score exactly as the plain model, and a sweep cell with gpus_per_cell 2 runs in one process."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.errors import BobError
from harness.store import ResultStore


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory) -> Path:
    """An untrained tiny GPT-2 (4 blocks) saved with its tokenizer, as save_pretrained writes it."""
    import random

    import torch
    import transformers

    from backbones.tiny_lm import make_config, train_tokenizer
    from tasks.bias_toy import corpus_lines

    tokenizer = train_tokenizer(corpus_lines(random.Random(0), 600))
    config = make_config("gpt2", len(tokenizer), tokenizer.eos_token_id)
    config.n_layer = 4
    folder = tmp_path_factory.mktemp("lm-shard")
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _backbone(folder: Path):
    from backbones.hf_lm import load_causal_lm

    return load_causal_lm(f"hf:{folder}", "pretrained")


def _size(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def test_plan_spreads_whole_blocks_over_two_gpus_and_refuses_a_model_that_does_not_fit(lm_folder):
    from backbones.hf_lm import plan_device_map

    model = _backbone(lm_folder).model
    room = int(_size(model) * 0.8)  # neither GPU holds the whole model
    plan = plan_device_map(model, ["cuda:0", "cuda:1"], max_memory={0: room, 1: room})
    assert set(plan.values()) == {0, 1}
    blocks = {k: v for k, v in plan.items() if k.startswith("transformer.h.")}
    assert blocks and all(k.count(".") == 2 for k in blocks)  # whole GPT2Block modules (_no_split_modules), never split inside
    assert plan.get("transformer.wte", plan.get("transformer")) == 0  # inputs enter on the first GPU
    with pytest.raises(BobError, match="does not fit on cuda:0, cuda:1"):
        plan_device_map(model, ["cuda:0", "cuda:1"], max_memory={0: room // 4, 1: room // 4})
    with pytest.raises(BobError, match="cuda:1 not visible here"):
        plan_device_map(model, ["cuda:0", "cuda:1"])  # no GPU on this machine


def test_a_model_dispatched_over_devices_scores_exactly_as_the_plain_model(lm_folder, tmp_path):
    """The same plan executed with accelerate's hooks (GPU 0 -> cpu, GPU 1 -> disk offload, whose
    weights are moved in at each forward): log-likelihoods equal the undispatched model's."""
    from accelerate import dispatch_model

    from backbones.hf_lm import plan_device_map

    plain = _backbone(lm_folder)
    texts = ["the nurse said that she was tired .", "a doctor walked in ."]
    pairs = [("the nurse said", " that she was tired ."), ("a doctor", " walked in .")]
    ref_roll = plain.scorer("cpu").rolling_loglikelihood(texts)
    ref_ll = plain.scorer("cpu").loglikelihood(pairs)

    spread = _backbone(lm_folder)
    room = int(_size(spread.model) * 0.8)
    plan = plan_device_map(spread.model, ["cuda:0", "cuda:1"], max_memory={0: room, 1: room})
    dispatch_model(spread.model, device_map={k: ("cpu" if v == 0 else "disk") for k, v in plan.items()}, offload_dir=str(tmp_path / "offload"))
    assert any(tmp_path.joinpath("offload").iterdir())  # part of the model really lives elsewhere
    assert spread.scorer("cpu").rolling_loglikelihood(texts) == pytest.approx(ref_roll, rel=1e-6)
    assert [round(x[0], 5) for x in spread.scorer("cpu").loglikelihood(pairs)] == [round(x[0], 5) for x in ref_ll]


def test_a_sweep_cell_with_two_gpus_runs_the_lm_in_one_process_and_records_the_placement(lm_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the nurse said that she was tired .\na doctor walked in and sat down .\n" * 3)
    grid = tmp_path / "g.yaml"
    grid.write_text(f"name: shard\nbackbones: ['hf:{lm_folder}']\nweights: pretrained\nmethods: [lm_zeroshot]\n"
                    f"tasks: ['perplexity:{corpus}']\ngpus_per_cell: 2\n")
    out = CliRunner().invoke(main, ["sweep", str(grid), "--results", "res", "--device", "cpu"])
    assert out.exit_code == 0, out.output
    (record,) = list(ResultStore(tmp_path / "res" / "shard").records())
    assert record["status"] == "ok", record["error"]
    assert record["distributed"]["world_size"] == 1  # no ranks: one process holds the model
    assert record["distributed"]["model_sharding"] == {"how": "one device", "devices": ["cpu"]}  # CPU: one device to hold it
    assert json.dumps(record)  # the placement is plain JSON

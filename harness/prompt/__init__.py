"""Prompt learning for vision-language backbones (CoOp and successors) on open_clip towers.

- ``sets.py``: what a cell evaluates (the test split, base / new classes, targets);
- ``towers.py``: an open_clip model's text and image towers in the pieces prompt learners need
  (token embeddings, blocks, pooling, projection), widths read from the model;
- ``learners.py``: the learners (context vectors, meta-net, deep prompts, adapters), each naming
  the parameters it trains;
- ``recipes.py``: a method = a learner + its loss + its epoch / test-time hooks + its defaults;
- ``engine.py``: one cell: fit() the learner, select (last epoch or few-shot val), evaluate;
- ``tip.py`` / ``tpt.py``: Tip-Adapter's cache and its alpha/beta search, TPT's per-image tuning.

The methods are registered in ``harness/methods/prompt_methods.py``; the tasks (CoOp's eleven
datasets and its four protocols) in ``tasks/prompt_learning/``.
"""

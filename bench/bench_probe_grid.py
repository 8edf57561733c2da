"""Probe grids: a 16-setting linear-probe grid (4 lr x 4 wd, train800 -> val200) through bob's
feature cache vs the naive protocol of the reference code (Battle of the Backbones'
linear_probe.py trains the head through the frozen backbone, every epoch, for every setting).
Target: speed-up >= 10x at equal accuracy (both best val200 accuracies reported). Also bob's probe
vs scikit-learn's LogisticRegression on the same features (accuracy and time), and the default
L-BFGS probe's time against scikit-learn's lbfgs on the same features and C (ratio, equal objective).
The 16-setting grid is the ``solver: sgd`` (AdamW) probe's; the L-BFGS probe sweeps C itself."""
from __future__ import annotations

import itertools
import time

import numpy as np

from common import cli, write_result


def main(quick: bool = False) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from harness.features import FeatureCache, split_features
    from harness.methods.linear import fit_linear_probe
    from harness.registry import BACKBONES, TASKS
    from harness.types import RunContext

    task = TASKS.get("digits").factory()
    size, epochs, bs = 32, (2 if quick else 5), 64
    grid = list(itertools.product([1e-1, 1e-2, 1e-3, 1e-4], [0.0, 1e-4, 1e-3, 1e-2]))

    def fresh_backbone():
        return BACKBONES.get("timm:resnet18.a1_in1k").factory(weights="random", seed=0, img_size=size)

    # bob: features once per split (cache), then 16 fits on them
    t0 = time.perf_counter()
    backbone = fresh_backbone()
    ctx = RunContext(device="cpu", seed=0, cell_id="bench", feature_cache=FeatureCache(None), checkpoint_dir=None, log=lambda *_: None)
    xtr, ytr = split_features(backbone, task, "train800", ctx, bs)
    xva, yva = split_features(backbone, task, "val200", ctx, bs)
    bob_acc = {}
    for lr, wd in grid:
        predict = fit_linear_probe(np.asarray(xtr), ytr, 10, lr, wd, epochs, bs, seed=0)
        bob_acc[(lr, wd)] = float((predict(np.asarray(xva)) == yva).mean() * 100)
    bob_s = time.perf_counter() - t0

    # naive: every setting trains its head through the frozen backbone, re-reading the images every epoch
    t0 = time.perf_counter()
    model = fresh_backbone().model.eval()
    transform = backbone.preprocess.eval_transform()
    train_ds, val_ds = task.load("train800").with_transform(transform), task.load("val200").with_transform(transform)
    naive_acc = {}
    for lr, wd in grid:
        torch.manual_seed(0)
        head = torch.nn.Linear(backbone.feature_dim, 10)
        opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=wd)
        for _ in range(epochs):
            for images, labels in DataLoader(train_ds, batch_size=bs, shuffle=True):
                with torch.no_grad():
                    feats = model(images)
                loss = torch.nn.functional.cross_entropy(head(feats), labels)
                opt.zero_grad()
                loss.backward()
                opt.step()
        correct = 0
        with torch.no_grad():
            for images, labels in DataLoader(val_ds, batch_size=bs):
                correct += int((head(model(images)).argmax(1) == labels).sum())
        naive_acc[(lr, wd)] = correct / len(val_ds) * 100
    naive_s = time.perf_counter() - t0

    # scikit-learn on the same (standardised) features
    from sklearn.linear_model import LogisticRegression

    mean, std = np.asarray(xtr).mean(0), np.asarray(xtr).std(0) + 1e-6
    t0 = time.perf_counter()
    clf = LogisticRegression(max_iter=1000, C=1.0).fit((np.asarray(xtr) - mean) / std, ytr)
    sk_s = time.perf_counter() - t0
    sk_acc = float(clf.score((np.asarray(xva) - mean) / std, yva) * 100)
    best_lr, best_wd = max(bob_acc, key=bob_acc.get)
    t0 = time.perf_counter()
    fit_linear_probe(np.asarray(xtr), ytr, 10, best_lr, best_wd, 100, 256, seed=0)
    bob_one_s = time.perf_counter() - t0

    # the default (L-BFGS) probe against scikit-learn's lbfgs on the same standardised features and C: time ratio, objective
    from harness.methods.logreg import fit_logreg

    xs = (np.asarray(xtr, dtype=np.float64) - mean) / std
    t0 = time.perf_counter()
    lb = fit_logreg(xs, ytr, 10, 1.0)
    lbfgs_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = LogisticRegression(C=1.0, tol=1e-5, max_iter=3000).fit(xs, ytr)
    sk64_s = time.perf_counter() - t0
    proba = ref.predict_proba(xs)
    sk_obj = float(-np.log(proba[np.arange(len(ytr)), ytr]).sum() + (ref.coef_ ** 2).sum() / 2.0)

    speedup = naive_s / bob_s
    figures = {"settings": len(grid), "epochs": epochs, "img_size": size, "backbone": "resnet18 (random-init)",
               "bob_s": round(bob_s, 2), "naive_s": round(naive_s, 2), "speedup": round(speedup, 1),
               "bob_best_val200": round(max(bob_acc.values()), 2), "naive_best_val200": round(max(naive_acc.values()), 2),
               "sklearn_logreg": {"val200": round(sk_acc, 2), "fit_s": round(sk_s, 3)},
               "bob_probe_default_epochs": {"val200_setting": [best_lr, best_wd], "fit_s": round(bob_one_s, 3)},
               "lbfgs_vs_sklearn": {"C": 1.0, "bob_lbfgs_s": round(lbfgs_s, 3), "sklearn_s": round(sk64_s, 3), "time_ratio": round(lbfgs_s / sk64_s, 2),
                                    "objective_rel_diff": abs(lb.objective - sk_obj) / sk_obj, "converged": lb.converged}}
    checks = {"speed-up >= 10x": speedup >= 10, "L-BFGS objective = sklearn's (rel <= 1e-3)": figures["lbfgs_vs_sklearn"]["objective_rel_diff"] <= 1e-3, "equal accuracy (bob best >= naive best - 2 points)": figures["bob_best_val200"] >= figures["naive_best_val200"] - 2}
    return write_result("probe_grid", figures, checks,
                        f"16-setting probe grid: {speedup:.0f}x faster than the naive protocol ({bob_s:.1f} s vs {naive_s:.1f} s), best val200 "
                        f"{figures['bob_best_val200']:.1f} vs {figures['naive_best_val200']:.1f}; sklearn LogisticRegression {sk_acc:.1f} in {sk_s:.2f} s; "
                        f"L-BFGS probe / sklearn time {lbfgs_s / sk64_s:.2f}x at equal objective")


if __name__ == "__main__":
    cli(main, __doc__)

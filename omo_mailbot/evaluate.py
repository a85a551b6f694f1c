"""``omo-mailbot evaluate``: how well the whole decision (rules + model) separates acute from preparation.

Two views, both on the seed corpus: stratified k-fold cross-validation over the
train split (every mail judged by a model that never saw it), and the fixed
test split judged by a model trained on the whole train split. For each:
per-class precision and recall, the confusion matrix, and the recall/precision
trade-off over thresholds of the final score. Written to ``report.txt`` and
``tradeoff.png`` (matplotlib, the only importer) in the output folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import corpus, training
from .config import Config
from .mail import parse
from .rules import RuleSet, load_rules
from .verdict import decision_inputs

THRESHOLDS = [x / 2 for x in range(-20, 25)]  # -10.0 .. 12.0


@dataclass(frozen=True)
class Item:
    path: str
    label: str
    split: str
    kind: str
    text: str
    rule_score: float


@dataclass(frozen=True)
class Scores:
    recall_acute: float
    precision_acute: float
    recall_preparation: float
    precision_preparation: float
    accuracy: float
    confusion: dict[str, int]  # tp, fn, fp, tn with acute as positive


def load_items(root: Path, rules: RuleSet) -> list[Item]:
    items: list[Item] = []
    if not root.is_dir():
        return items
    for ex in corpus.examples(root):
        inputs = decision_inputs(parse(ex.path.read_bytes()))
        score = sum(h.weight for h in rules.evaluate(inputs.context))
        items.append(Item(str(ex.path), ex.label, ex.split, ex.kind, inputs.model_text, score))
    return items


def score_of(rule_score: float, probability: float, model_weight: float) -> float:
    return rule_score + model_weight * (2.0 * probability - 1.0)


def measure(labels: Sequence[str], scores: Sequence[float], threshold: float) -> Scores:
    tp = fn = fp = tn = 0
    for label, score in zip(labels, scores, strict=True):
        predicted = score >= threshold
        if label == "acute":
            tp, fn = tp + predicted, fn + (not predicted)
        else:
            fp, tn = fp + predicted, tn + (not predicted)

    def ratio(a: int, b: int) -> float:
        return a / b if b else 1.0

    return Scores(
        recall_acute=ratio(tp, tp + fn),
        precision_acute=ratio(tp, tp + fp),
        recall_preparation=ratio(tn, tn + fp),
        precision_preparation=ratio(tn, tn + fn),
        accuracy=ratio(tp + tn, tp + tn + fp + fn),
        confusion={"tp": tp, "fn": fn, "fp": fp, "tn": tn},
    )


def _block(title: str, labels: Sequence[str], scores: Sequence[float], threshold: float) -> list[str]:
    s = measure(labels, scores, threshold)
    c = s.confusion
    return [
        f"## {title} ({len(labels)} mails, threshold {threshold:+.1f})",
        "",
        "               precision  recall",
        f"  acute          {s.precision_acute:6.3f}   {s.recall_acute:6.3f}",
        f"  preparation    {s.precision_preparation:6.3f}   {s.recall_preparation:6.3f}",
        f"  accuracy       {s.accuracy:6.3f}",
        "",
        "  confusion          judged acute  judged preparation",
        f"  really acute       {c['tp']:>12}  {c['fn']:>18}",
        f"  really preparation {c['fp']:>12}  {c['tn']:>18}",
        "",
        "  threshold  recall(acute)  precision(acute)  accuracy",
        *[
            f"  {t:+9.1f}  {m.recall_acute:13.3f}  {m.precision_acute:16.3f}  {m.accuracy:8.3f}"
            for t in THRESHOLDS
            for m in [measure(labels, scores, t)]
        ],
        "",
    ]


def _plot(path: Path, curves: Mapping[str, tuple[Sequence[str], Sequence[float]]], threshold: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, (labels, scores) in curves.items():
        ms = [measure(labels, scores, t) for t in THRESHOLDS]
        ax1.plot(THRESHOLDS, [m.recall_acute for m in ms], label=f"{name}: recall (acute)")
        ax1.plot(THRESHOLDS, [m.precision_acute for m in ms], "--", label=f"{name}: precision (acute)")
        ax2.plot([m.recall_acute for m in ms], [m.precision_acute for m in ms], marker=".", label=name)
    ax1.axvline(threshold, color="grey", linestyle=":", label=f"configured threshold {threshold:+.1f}")
    ax1.set_xlabel("threshold on the final score")
    ax1.set_ylim(0, 1.02)
    ax1.legend(fontsize=7)
    ax1.set_title("Acute: recall and precision over thresholds")
    ax2.set_xlabel("recall (acute)")
    ax2.set_ylabel("precision (acute)")
    ax2.set_title("Trade-off")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_evaluation(cfg: Config, out: Path, *, folds: int = 5, plot: bool = True) -> int:
    started = time.perf_counter()
    rules = load_rules(cfg.resolve(cfg.paths.rules_dir))
    items = load_items(cfg.resolve(cfg.paths.corpus_dir), rules)
    holdout = load_items(cfg.resolve(cfg.paths.holdout_dir), rules)
    train = [i for i in items if i.split == "train"]
    test = [i for i in items if i.split == "test"]
    weight, threshold = cfg.decision.model_weight, cfg.decision.acute_threshold
    oof = training.out_of_fold_probabilities([i.text for i in train], [i.label for i in train], folds=folds)
    cv_scores = [score_of(i.rule_score, p, weight) for i, p in zip(train, oof, strict=True)]
    t0 = time.perf_counter()
    model = training.train([i.text for i in train], [i.label for i in train])
    train_seconds = time.perf_counter() - t0
    test_probs = model.acute_probability([i.text for i in test])
    test_scores = [score_of(i.rule_score, p, weight) for i, p in zip(test, test_probs, strict=True)]
    cv_model_only = [score_of(0.0, p, weight) for p in oof]
    holdout_scores = [
        score_of(i.rule_score, p, weight)
        for i, p in zip(holdout, model.acute_probability([i.text for i in holdout]), strict=True)
    ]
    lines = [
        "# omo-mailbot evaluation",
        "",
        f"corpus: {len(items)} mails ({sum(i.label == 'acute' for i in items)} acute), "
        f"train split {len(train)}, test split {len(test)}; rules {rules.hash[:12]}; "
        f"model weight {weight:g}; threshold {threshold:+.1f}; {folds}-fold stratified CV",
        "",
        *_block(
            f"Cross-validation over the train split ({folds} folds)", [i.label for i in train], cv_scores, threshold
        ),
        *_block("Test split (never used for training)", [i.label for i in test], test_scores, threshold),
        *_block("Model alone, cross-validated (for comparison)", [i.label for i in train], cv_model_only, 0.0)[:12],
        *(
            _block(
                "Holdout: written separately, never trained on", [i.label for i in holdout], holdout_scores, threshold
            )
            if holdout
            else []
        ),
        "## Mistakes at the configured threshold",
        "",
    ]
    for group, pool, scores in (
        ("cv", train, cv_scores),
        ("test", test, test_scores),
        ("holdout", holdout, holdout_scores),
    ):
        for item, score in zip(pool, scores, strict=True):
            if (score >= threshold) != (item.label == "acute"):
                lines.append(f"  [{group}] {item.label:<11} score {score:+6.2f}  {item.kind:<28} {item.path}")
    lines += [
        "",
        f"training on the train split took {train_seconds:.2f} s; evaluation {time.perf_counter() - started:.1f} s",
    ]
    out.mkdir(parents=True, exist_ok=True)
    report = "\n".join(lines) + "\n"
    (out / "report.txt").write_text(report)
    summary: dict[str, Any] = {
        "cv": measure([i.label for i in train], cv_scores, threshold).__dict__,
        "test": measure([i.label for i in test], test_scores, threshold).__dict__,
        "holdout": measure([i.label for i in holdout], holdout_scores, threshold).__dict__ if holdout else None,
        "threshold": threshold,
        "train_seconds": round(train_seconds, 3),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if plot:
        curves = {"cv": ([i.label for i in train], cv_scores), "test": ([i.label for i in test], test_scores)}
        if holdout:
            curves["holdout"] = ([i.label for i in holdout], holdout_scores)
        try:
            _plot(out / "tradeoff.png", curves, threshold)
        except ImportError:
            plot = False
            print("no plot: matplotlib is not installed (pip install 'omo-mailbot[plot]')")
    print(report)
    print(f"written: {out / 'report.txt'}, {out / 'summary.json'}" + (f", {out / 'tradeoff.png'}" if plot else ""))
    return 0

"""Grouped cross-validation of CT training recipes on the UCSD COVID-CT subset (issue 23, part 2).

Every candidate is a set of ``TrainConfig`` overrides over ``train``'s defaults (128 px, 20 epochs, the
baseline CNN) trained on full slices (``roi="none"``). The folds keep every slice of one page of one paper
(``covid_tf.data.splits.figure_group(level="page")``) in one fold; each fold holds out a grouped validation
part of its training folds for early stopping. The table gives the pooled out-of-fold ROC-AUC with a bootstrap
95 % CI (resampling figure groups), the mean and SD over folds, and the minutes the candidate took (wall time,
and CPU time, which moves less when others share the cores). Every
candidate's test folds are also predicted with test-time augmentation (the mean with the left-right mirror), at
no training cost: its row ``<candidate>+tta``::

    nice -n 10 python benchmarks/ct_recipe_cv.py --candidates baseline,ct --folds 5 --out reports/ct_recipe

Results accumulate in ``OUT/results.json`` (one entry per candidate, folds and epochs; a rerun replaces it),
``OUT/<candidate>-k<folds>-e<epochs>.csv`` holds the out-of-fold predictions, ``OUT/table.md`` the table.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from common import machine_info, quiet_tensorflow

quiet_tensorflow()

import numpy as np  # noqa: E402

from covid_tf import config  # noqa: E402
from covid_tf.runs.recipes import RECIPES  # noqa: E402

# Candidates: TrainConfig overrides over train's defaults. "baseline" is today's default run.
CANDIDATES: dict[str, dict] = {
    "baseline": {},
    "size192": {"image_size": 192},
    "flip": {"augmentation": "shift-rotate-zoom-flip"},
    "strong-aug": {"augmentation": "ct"},
    "label-smoothing": {"label_smoothing": 0.1},
    "mixup": {"mixup": 0.2},
    "cosine": {"lr_schedule": "cosine"},
    "strong-aug+cosine": {"augmentation": "ct", "lr_schedule": "cosine"},
    "strong-aug+mixup": {"augmentation": "ct", "mixup": 0.2},
    "strong-aug+ls+cosine": {"augmentation": "ct", "label_smoothing": 0.1, "lr_schedule": "cosine"},
    "strong-aug+mixup+cosine": {"augmentation": "ct", "mixup": 0.2, "lr_schedule": "cosine"},
    "resnet18": {"model": "resnet18"},
    **{f"recipe-{name}": dict(overrides) for name, overrides in RECIPES.items()},
}


def dev_frame(data: Path, level: str):
    """The dev set's images with ``patient_id`` set to their figure group."""
    from covid_tf.data.discover import discover
    from covid_tf.data.splits import figure_group

    frame = discover(data).frame.copy()
    frame["patient_id"] = [figure_group(path, level) for path in frame["path"]]
    return frame


def pooled_auc(predictions, class_names, n_bootstrap: int, seed: int, prefix: str = "p_") -> dict:
    """Pooled out-of-fold ROC-AUC of the positive class with a figure-group bootstrap 95 % CI."""
    from covid_tf.evaluation.bootstrap import bootstrap_confidence_intervals
    from covid_tf.evaluation.metrics import one_vs_rest_auc, positive_class_index

    positive = positive_class_index(class_names)
    label_of = {name: index for index, name in enumerate(class_names)}
    y_true = predictions["label"].map(label_of).to_numpy()
    probabilities = predictions[[f"{prefix}{name}" for name in class_names]].to_numpy()
    auc = one_vs_rest_auc(y_true, probabilities, class_names)[0][positive]
    if not n_bootstrap:
        return {"roc_auc": float(auc)}
    intervals = bootstrap_confidence_intervals(y_true, probabilities.argmax(1), probabilities,
                                               groups=predictions["group"].to_numpy(), positive_index=positive,
                                               n_bootstrap=n_bootstrap, seed=seed)
    accuracy = float((probabilities.argmax(1) == y_true).mean())
    return {"roc_auc": float(auc), "roc_auc_ci": intervals["roc_auc"], "accuracy": accuracy}


def run_candidate(name: str, args: argparse.Namespace, frame, class_names) -> list[dict]:
    from covid_tf.runs.config import TrainConfig
    from covid_tf.training.tuning import cross_validate

    overrides = dict(CANDIDATES[name])
    if args.epochs:
        overrides["epochs"] = args.epochs
    cfg = TrainConfig(data=str(args.data), roi="none", n_bootstrap=0, **overrides)
    path = args.out / f"{name}-k{args.folds}-e{cfg.epochs}.csv"
    if args.rescore is not None:  # score the predictions of an earlier run (its minutes as measured then)
        import pandas as pd

        predictions, minutes, cpu_minutes, epochs_run = pd.read_csv(path), args.rescore, float("nan"), []
    else:
        started, cpu_started = time.perf_counter(), cpu_seconds()
        result = cross_validate(cfg, frame, class_names, k=args.folds, verbose=0, tta=True)
        minutes = (time.perf_counter() - started) / 60
        cpu_minutes = (cpu_seconds() - cpu_started) / 60
        predictions, epochs_run = result.predictions, result.folds["epochs_run"].tolist()
        predictions.to_csv(path, index=False)
    rows = []
    variants = (("", "plain_p_"), ("+tta", "p_")) if f"plain_p_{class_names[0]}" in predictions else (("", "p_"),)
    for suffix, prefix in variants:
        pooled = pooled_auc(predictions, class_names, args.n_bootstrap, cfg.seed, prefix)
        folds = predictions.groupby("fold").apply(
            lambda part, p=prefix: pooled_auc(part, class_names, 0, cfg.seed, p)["roc_auc"], include_groups=False)
        rows.append({"candidate": name + suffix, "folds": args.folds, "epochs": cfg.epochs,
                     "overrides": CANDIDATES[name], "tta": bool(suffix), **pooled,
                     "fold_auc_mean": float(folds.mean()), "fold_auc_sd": float(folds.std(ddof=1)),
                     "epochs_run": epochs_run, "minutes": minutes, "cpu_minutes": cpu_minutes})
    return rows


def paired_difference(first, second, class_names, n_bootstrap: int, seed: int) -> dict:
    """ROC-AUC of ``second`` minus that of ``first`` on the same out-of-fold slices (plain predictions), with a
    paired bootstrap 95 % CI: both are scored on each resample of figure groups, so the folds' shared noise cancels."""
    from covid_tf.evaluation.bootstrap import bootstrap_weights, percentile_interval, weighted_auc
    from covid_tf.evaluation.metrics import positive_class_index

    positive = class_names[positive_class_index(class_names)]
    keys = ["path", "label", "group", "fold"]
    merged = first[keys].assign(a=first[f"{_plain(first)}{positive}"]).merge(
        second[keys].assign(b=second[f"{_plain(second)}{positive}"]), on=keys)
    is_positive = (merged["label"] == positive).to_numpy()
    weights = bootstrap_weights(is_positive.astype(int), groups=merged["group"].to_numpy(), n_bootstrap=n_bootstrap,
                                seed=seed)
    full = np.ones((1, len(merged)))
    scores = {side: merged[side].to_numpy() for side in ("a", "b")}
    difference = weighted_auc(full, is_positive, scores["b"])[0] - weighted_auc(full, is_positive, scores["a"])[0]
    resampled = weighted_auc(weights, is_positive, scores["b"]) - weighted_auc(weights, is_positive, scores["a"])
    return {"difference": float(difference), "ci": percentile_interval(resampled),
            "share_above_0": float(np.mean(resampled[np.isfinite(resampled)] > 0)), "n": len(merged)}


def _plain(predictions) -> str:
    return "plain_p_" if any(column.startswith("plain_p_") for column in predictions.columns) else "p_"


def cpu_seconds() -> float:
    """User and system CPU time of this process and its threads: on a shared machine it moves less than wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def markdown(results: list[dict]) -> str:
    lines = ["| candidate | folds | epochs | pooled OOF ROC-AUC [95 % CI] | fold mean ± SD | accuracy | minutes "
             "| CPU minutes |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in sorted(results, key=lambda r: (r["folds"], r["epochs"], -r["roc_auc"])):
        low, high = row["roc_auc_ci"]
        lines.append(f"| {row['candidate']} | {row['folds']} | {row['epochs']} | {row['roc_auc']:.3f} "
                     f"[{low:.3f}, {high:.3f}] | {row['fold_auc_mean']:.3f} ± {row['fold_auc_sd']:.3f} | "
                     f"{row['accuracy']:.3f} | {row['minutes']:.1f} | {row.get('cpu_minutes', float('nan')):.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=config.CT_UCSD_SUBSET_DIR)
    parser.add_argument("--candidates", default="baseline", help=f"comma-separated, of {', '.join(CANDIDATES)}")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=0, help="override every candidate's epochs (a quick screen)")
    parser.add_argument("--group-level", choices=("figure", "page"), default="page")
    parser.add_argument("--n-bootstrap", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("reports/ct_recipe"))
    parser.add_argument("--compare", metavar="A,B",
                        help="do not train: the paired ROC-AUC difference B - A of two candidates' saved predictions")
    parser.add_argument("--rescore", type=float, metavar="MINUTES",
                        help="do not train: score the candidates' prediction CSVs in --out, which took MINUTES")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.candidates.split(",") if name.strip()]
    unknown = [name for name in names if name not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidate(s) {', '.join(unknown)}; choose among {', '.join(CANDIDATES)}")
    if not args.data.is_dir():
        print(f"{args.data}: the UCSD COVID-CT subset is not there; nothing to do")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    frame = dev_frame(args.data, args.group_level)
    class_names = sorted(frame["label"].unique())
    if args.compare:
        import pandas as pd

        epochs = args.epochs or 20
        first, second = (pd.read_csv(args.out / f"{name}-k{args.folds}-e{epochs}.csv") for name in
                         args.compare.split(","))
        result = paired_difference(first, second, class_names, args.n_bootstrap, seed=config.SEED)
        low, high = result["ci"]
        print(f"{args.compare}: ROC-AUC difference {result['difference']:+.3f} [{low:+.3f}, {high:+.3f}], "
              f"above 0 in {result['share_above_0']:.0%} of resamples (n={result['n']})")
        return 0
    results_path = args.out / "results.json"
    for name in names:
        rows = run_candidate(name, args, frame, class_names)
        # Read again before writing: another run of this script may have added its rows meanwhile.
        saved = json.loads(results_path.read_text()) if results_path.is_file() else {"machine": machine_info(),
                                                                                       "results": []}
        for row in rows:
            low, high = row["roc_auc_ci"]
            print(f"{row['candidate']}: pooled ROC-AUC {row['roc_auc']:.3f} [{low:.3f}, {high:.3f}], "
                  f"{row['minutes']:.1f} min", flush=True)
            key = (row["candidate"], row["folds"], row["epochs"])
            saved["results"] = [r for r in saved["results"]
                                if (r["candidate"], r["folds"], r["epochs"]) != key] + [row]
        results_path.write_text(json.dumps(saved, indent=1, default=float))
        (args.out / "table.md").write_text(markdown(saved["results"]))
    print(markdown(saved["results"]))
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())

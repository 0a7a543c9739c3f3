"""Training runs as folders: split, fit, evaluation, figures, written atomically and refused when clashing.

A run directory holds ``config.json``, ``split.csv``, ``skipped.csv``, ``roi.csv`` (``--roi`` runs: each
image's lung mask, its source and whether the ROI applied), ``history.csv``, ``model.keras``,
``metrics.json`` (validation and test metrics of the final model, written last), ``figures/`` and ``logs/``
(TensorBoard). Killing a run and starting the same command again resumes from the last finished epoch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import keras
import pandas as pd

from covid_tf import config, software_versions
from covid_tf.data.discover import DatasetIndex, discover
from covid_tf.data.splits import apply_split_file, make_split, save_split, split_leaks
from covid_tf.errors import CovidTfError
from covid_tf.evaluation.evaluate import evaluate_rows
from covid_tf.evaluation.inference import predict_paths
from covid_tf.figures.run import write_run_figures
from covid_tf.io_utils import atomic_write, atomic_write_json, atomic_write_text, csv_text
from covid_tf.lungs.roi_inputs import AUTO, resolve_auto, run_inputs
from covid_tf.models.common import save_model
from covid_tf.models.transfer import resolve_weights
from covid_tf.training import resume, run_folder
from covid_tf.training.config import TrainConfig
from covid_tf.training.fit import fit
from covid_tf.training.resume import PARTIAL_LOG

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run produced."""

    model: keras.Model
    history: pd.DataFrame
    split: pd.DataFrame
    class_names: list[str]
    metrics: dict
    run_dir: Path | None
    roi_table: pd.DataFrame | None = None  # the lung masks of a --roi run (its roi.csv)


def prepare_split(cfg: TrainConfig, index: DatasetIndex | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Index the data and return (split frame, class names), refusing leaky user splits and empty classes."""
    index = index or discover(cfg.data, classes=cfg.classes, class_map=cfg.class_map)
    class_names = index.class_names
    present = sorted(set(index.frame["label"]))
    if len(present) < 2:
        raise CovidTfError(f"{cfg.data}: training needs at least two classes, found {', '.join(present) or 'none'}")
    if cfg.split_file:
        split = _apply_split_file(index, Path(cfg.split_file))
    elif (index.frame["split"] != "").any():
        split = index.frame.copy()  # the layout's own train/val/test folders or CSV column
    else:
        split = make_split(index.frame, fractions=cfg.split_fractions, counts=cfg.split_counts, seed=cfg.seed)
    leaks = split_leaks(split)
    if leaks and not cfg.allow_leakage:
        first = leaks[0]
        raise CovidTfError(
            f"{len(leaks)} patient(s) or duplicate image group(s) appear in more than one split, e.g. "
            f"{', '.join(first['paths'][:3])} in {' and '.join(first['splits'])}; "
            "fix the split or pass --allow-leakage"
        )
    _check_every_class_in_every_split(split, class_names)
    split.attrs["skipped"] = [(item.path, item.reason) for item in index.skipped]  # reported by the command
    split.attrs["notes"] = list(index.notes)
    for note in index.notes:  # said before the epochs, not after them
        logger.warning(note)
    return split, class_names


def _check_every_class_in_every_split(split: pd.DataFrame, class_names: Sequence[str]) -> None:
    """Every class needs images in train and val, and in test unless the test split is empty on purpose."""
    counts = split[split["split"] != ""].groupby(["split", "label"]).size()
    needed = ["train", "val"] + (["test"] if (split["split"] == "test").any() else [])
    for name in needed:
        if not (split["split"] == name).any():
            raise CovidTfError(f"the split has no {name!r} images; give more data or other split fractions")
    for label in class_names:
        missing = [name for name in needed if counts.get((name, label), 0) == 0]
        if missing:
            have = {name: int(counts.get((name, label), 0)) for name in config.SPLIT_NAMES}
            raise CovidTfError(f"class {label!r} has no images in the {' and '.join(missing)} split(s) (it has "
                               f"{', '.join(f'{k} {v}' for k, v in have.items())}); every class needs images in "
                               "train, val and test: add images, change the split, or choose classes with --classes")


def _apply_split_file(index: DatasetIndex, split_file: Path) -> pd.DataFrame:
    frame, table = apply_split_file(index.frame, split_file)
    missing = sorted(set(table["key"]) - set(frame["key"]))
    if missing:
        raise CovidTfError(f"{split_file}: {len(missing)} listed file(s) are not readable images of the data, "
                           f"e.g. {missing[0]}")
    return frame.drop(columns="key")


def evaluate_splits(model: keras.Model, cfg: TrainConfig, split: pd.DataFrame, class_names: Sequence[str],
                    names: Sequence[str] = ("val", "test"), loader=None) -> dict:
    """Metrics of ``model`` on the named splits (absent splits are left out), by :func:`evaluate_rows`;
    ``loader``: the run's lung ROI."""
    predict = partial(predict_paths, model, image_size=cfg.image_size, channels=cfg.channels,
                      batch_size=cfg.batch_size, loader=loader)
    results = {}
    for name in names:
        rows = split[split["split"] == name]
        if not rows.empty:
            results[name] = evaluate_rows(predict, rows, class_names, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)[1]
    return results


def _check_run_dir(run_dir: Path, cfg: TrainConfig, overwrite: bool) -> None:
    """Refuse to replace a finished run without ``overwrite``, and to resume a run with another configuration.

    Nothing is changed here: ``--overwrite`` moves the old run aside only once the new one is ready to start.
    """
    if not run_dir.is_dir() or overwrite:
        return
    if (run_dir / "model.keras").is_file() and (run_dir / "metrics.json").is_file():
        raise CovidTfError(f"{run_dir}: a finished run is already there; choose another --out or pass --overwrite")
    saved = run_dir / "config.json"
    if saved.is_file():
        try:
            previous = json.loads(saved.read_text())
        except (OSError, ValueError):
            raise CovidTfError(f"{saved}: unreadable; pass --overwrite to start this run again") from None
        # A run may resume on other hardware: the strategy and devices do not change the run.
        changed = [k for k, v in cfg.to_dict().items()
                   if k not in ("class_names", "roi_resolved", "strategy", "devices")
                   and _jsonable(v) != previous.get(k)]
        if changed:
            raise CovidTfError(f"{run_dir}: holds an unfinished run with other settings ({', '.join(changed)}); "
                               "use another --out, the same options, or --overwrite")


def _jsonable(value):
    return json.loads(json.dumps(value))


def _warn(message: str) -> None:
    logger.warning(message)


def train_run(cfg: TrainConfig, run_dir: str | Path | None = None, *, overwrite: bool = False,
              verbose: int | str = "auto", figures: bool = True) -> TrainResult:
    """Run a whole training: split, fit, save (atomically), evaluate on val and test (``figures``: draw the run's
    figures into ``run_dir/figures/``, a few seconds).

    Every check that can fail (settings, data, split) runs before the run folder is touched; the folder is
    then locked for the run (:mod:`covid_tf.training.run_folder`), and with ``overwrite`` the old run is
    kept aside until the new one has finished (put back if it fails).
    """
    cfg.validate()
    run_path = Path(run_dir) if run_dir is not None else None
    # weights="auto" becomes what the backbone really starts from (config.json records it), said once if random.
    cfg.weights = resolve_weights(cfg.model, cfg.weights)
    if run_path is not None:
        _check_run_dir(run_path, cfg, overwrite)
    started = time.perf_counter()
    split, class_names = prepare_split(cfg)
    cfg.class_names = list(class_names)
    if cfg.roi == AUTO:  # decided once from the training images; config.json records the choice
        train = split[split["split"] == "train"]
        masks = train["mask_path"].tolist() if "mask_path" in train else None
        cfg.roi_resolved, note = resolve_auto(train["path"].tolist(), masks, seed=cfg.seed)
        logger.info(note)
    if run_path is None:
        return _train(cfg, split, class_names, None, verbose, started, figures)
    with run_folder.locked(run_path):
        _check_run_dir(run_path, cfg, overwrite)  # again: another run may have finished meanwhile
        aside = run_folder.move_aside(run_path) if overwrite else run_folder.pending_aside(run_path)
        run_folder.remove_stale_temporaries(run_path, _warn)
        resume.repair_partial_log(run_path / "checkpoints" / PARTIAL_LOG, _warn)
        try:
            result = _train(cfg, split, class_names, run_path, verbose, started, figures)
        except BaseException:
            if overwrite and aside is not None:
                run_folder.restore_aside(run_path, aside)
            raise
        run_folder.discard_aside(aside)
    return result


def _train(cfg: TrainConfig, split: pd.DataFrame, class_names: list[str], run_path: Path | None,
           verbose: int | str, started: float, figures: bool = True) -> TrainResult:
    if run_path is not None:
        atomic_write_json(run_path / "config.json", {**cfg.to_dict(), "versions": software_versions()})
        save_split(split, run_path / "split.csv")
        skipped = pd.DataFrame(split.attrs.get("skipped", []), columns=["path", "reason"])
        atomic_write_text(run_path / "skipped.csv", csv_text(skipped))
    inputs = run_inputs(cfg, split)  # lung masks once (cached), before any epoch
    if run_path is not None and inputs.table is not None:
        atomic_write_text(run_path / "roi.csv", csv_text(inputs.table))
    model, history = fit(cfg, split, class_names, run_path, verbose=verbose, inputs=inputs)
    metrics = evaluate_splits(model, cfg, split, class_names, loader=inputs.loader)
    metrics["train_seconds"] = round(time.perf_counter() - started, 1)
    if run_path is not None:
        atomic_write_text(run_path / "history.csv", csv_text(history))
        atomic_write(run_path / "model.keras", partial(save_model, model))
        shutil.rmtree(run_path / "checkpoints" / "cache", ignore_errors=True)
        if figures:
            write_run_figures(run_path, model=model)
        atomic_write_json(run_path / "metrics.json", metrics)  # last: its presence marks a finished run
    return TrainResult(model, history, split, list(class_names), metrics, run_path, inputs.table)


def retrain_on_train_and_val(cfg: TrainConfig, split: pd.DataFrame, class_names: Sequence[str], epochs: int,
                             verbose: int | str = "auto") -> keras.Model:
    """Seed 001's last step: train afresh on train+val for a fixed number of epochs (no early stopping)."""
    merged = split[split["split"].isin(["train", "val"])].copy()
    merged["split"] = "train"  # no validation data: nothing is selected or stopped early
    fixed = dataclasses.replace(cfg, epochs=epochs)
    model, _ = fit(fixed, merged, class_names, None, verbose=verbose, select_best=False)
    return model

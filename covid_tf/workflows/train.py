"""The ``train`` back-end: split, fit, evaluation, figures, written atomically and refused when clashing.

A run directory holds ``config.json``, ``split.csv``, ``skipped.csv``, ``roi.csv`` (``--roi`` runs: each
image's lung mask, its source and whether the ROI applied), ``history.csv``, ``model.keras``,
``metrics.json`` (validation and test metrics of the final model, written last), ``figures/`` and ``logs/``
(TensorBoard). Killing a run and starting the same command again resumes from the last finished epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from covid_tf import config
from covid_tf.data.discover import DatasetIndex, discover
from covid_tf.data.overlap import ReferenceSet, frame_thumbnail_of, reference_from_thumbnails
from covid_tf.data.splits import apply_split_file, make_split, split_leaks
from covid_tf.errors import CovidTfError
from covid_tf.evaluation.evaluate import evaluate_rows
from covid_tf.evaluation.tables import label_indices
from covid_tf.figures.run import write_run_figures
from covid_tf.lungs.roi.inputs import resolve_auto, run_inputs
from covid_tf.lungs.roi.modes import ATTENTION_MODE, AUTO, AUTO_BACKGROUND
from covid_tf.models.transfer import resolve_weights
from covid_tf.runs import record
from covid_tf.runs.config import TrainConfig
from covid_tf.runs.inference import load_model, predict_paths
from covid_tf.runs.overlap import TRAINING_SPLITS
from covid_tf.runs.record import RunRecord
from covid_tf.training import resume, run_folder
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
    config: TrainConfig | None = None  # the settings that ran: weights, class names and roi_resolved filled in
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)  # per evaluated split, row order of split


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


def training_fingerprints(index: DatasetIndex, split: pd.DataFrame) -> ReferenceSet:
    """The fingerprints of the split's train and val images (from the index's one decoding pass, where it made
    them: ``discover(frame_readings="stored")``; else from the files)."""
    rows = split[split["split"].isin(TRAINING_SPLITS)]
    paths = rows["path"].tolist()
    thumbnails = [index.frame_thumbnails.get(path) for path in paths]
    thumbnails = [found if found is not None else frame_thumbnail_of(path, "stored")
                  for path, found in zip(paths, thumbnails)]
    return reference_from_thumbnails(paths, rows["split"].tolist(), thumbnails,
                                     f"the run's fingerprints ({record.FINGERPRINTS_FILE})")


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
                    names: Sequence[str] = ("val", "test"), loader=None) -> tuple[dict, dict[str, np.ndarray]]:
    """Metrics of ``model`` on the named splits (absent splits are left out), by :func:`evaluate_rows`, and the
    probabilities it predicted for each; ``loader``: the run's lung ROI."""
    predict = partial(predict_paths, model, image_size=cfg.image_size, channels=cfg.channels,
                      batch_size=cfg.batch_size, loader=loader)
    metrics, probabilities = {}, {}
    for name in names:
        rows = split[split["split"] == name]
        if not rows.empty:
            probabilities[name], metrics[name] = evaluate_rows(predict, rows, class_names, n_bootstrap=cfg.n_bootstrap,
                                                               seed=cfg.seed)
    return metrics, probabilities


def _check_run_dir(run_dir: Path, cfg: TrainConfig, overwrite: bool) -> None:
    """Refuse to replace a finished run without ``overwrite``, and to resume a run with another configuration.

    Nothing is changed here: ``--overwrite`` moves the old run aside only once the new one is ready to start.
    """
    if not run_dir.is_dir() or overwrite:
        return
    if RunRecord(run_dir).finished:
        raise CovidTfError(f"{run_dir}: a finished run is already there; choose another --out or pass --overwrite")
    try:
        saved = RunRecord.read(run_dir, required=False)
        changed = saved.differences(cfg.to_dict(), TrainConfig.defaults()) if saved.exists else []
    except CovidTfError:
        raise CovidTfError(f"{run_dir / record.CONFIG_FILE}: unreadable; pass --overwrite to start this run "
                           "again") from None
    if changed:
        raise CovidTfError(f"{run_dir}: holds an unfinished run with other settings ({', '.join(changed)}); "
                           "use another --out, the same options, or --overwrite")


def _warn(message: str) -> None:
    logger.warning(message)


def resolve_run_config(cfg: TrainConfig, split: pd.DataFrame, class_names: Sequence[str]) -> TrainConfig:
    """A copy of ``cfg`` with what the run decides once, before anything is written: its class names, what
    ``roi="auto"`` means for its training images (said in one line), and the background randomisation that
    goes with it (``AUTO_BACKGROUND`` with lung attention from auto, unless given)."""
    resolved = dataclasses.replace(cfg, class_names=list(class_names))
    if cfg.roi != AUTO:
        return dataclasses.replace(resolved, roi_background=cfg.roi_background or 0.0)
    train = split[split["split"] == "train"]
    masks = train["mask_path"].tolist() if "mask_path" in train else None
    mode, note = resolve_auto(train["path"].tolist(), masks, seed=cfg.seed)
    background = cfg.roi_background
    if background is None:
        background = AUTO_BACKGROUND if mode == ATTENTION_MODE else 0.0
    logger.info(note + (f", background randomisation {background:g}" if background else ""))
    return dataclasses.replace(resolved, roi_resolved=mode, roi_background=background)


def train_run(cfg: TrainConfig, run_dir: str | Path | None = None, *, overwrite: bool = False,
              verbose: int | str = "auto", figures: bool = True) -> TrainResult:
    """Run a whole training: split, fit, save (atomically), evaluate on val and test (``figures``: draw the run's
    figures into ``run_dir/figures/`` from the test probabilities already computed, a few seconds).

    Every check that can fail (settings, data, split) runs before the run folder is touched; the folder is
    then locked for the run (:mod:`covid_tf.training.run_folder`), and with ``overwrite`` the old run is
    kept aside until the new one has finished (put back if it fails). ``cfg`` is not changed: the settings
    that ran are ``TrainResult.config``.
    """
    cfg.validate()
    run_path = Path(run_dir) if run_dir is not None else None
    # weights="auto" becomes what the backbone really starts from (config.json records it), said once if random.
    cfg = dataclasses.replace(cfg, weights=resolve_weights(cfg.model, cfg.weights))
    if run_path is not None:
        _check_run_dir(run_path, cfg, overwrite)
    started = time.perf_counter()
    index = discover(cfg.data, classes=cfg.classes, class_map=cfg.class_map, frame_readings="stored")
    split, class_names = prepare_split(cfg, index)
    cfg = resolve_run_config(cfg, split, class_names)
    if run_path is None:
        return _train(cfg, split, class_names, None, verbose, started, figures)
    fingerprints = training_fingerprints(index, split)
    with run_folder.locked(run_path):
        _check_run_dir(run_path, cfg, overwrite)  # again: another run may have finished meanwhile
        aside = run_folder.move_aside(run_path) if overwrite else run_folder.pending_aside(run_path)
        run_folder.remove_stale_temporaries(run_path, _warn)
        resume.repair_partial_log(run_path / "checkpoints" / PARTIAL_LOG, _warn)
        try:
            result = _train(cfg, split, class_names, run_path, verbose, started, figures, fingerprints)
        except BaseException:
            if overwrite and aside is not None:
                run_folder.restore_aside(run_path, aside)
            raise
        run_folder.discard_aside(aside)
    return result


def _draw_figures(run_path: Path, cfg: TrainConfig, split: pd.DataFrame, history: pd.DataFrame,
                  class_names: Sequence[str], probabilities: dict[str, np.ndarray]) -> None:
    chosen = next((name for name in ("test", "val") if name in probabilities), None)
    rows = split[split["split"] == chosen] if chosen else split.iloc[:0]
    write_run_figures(run_path, history, label_indices(rows["label"], class_names) if chosen else None,
                      probabilities.get(chosen), class_names, model_name=cfg.model,
                      label=f"{chosen}, n={len(rows)}" if chosen else "")


def _train(cfg: TrainConfig, split: pd.DataFrame, class_names: list[str], run_path: Path | None,
           verbose: int | str, started: float, figures: bool = True,
           fingerprints: ReferenceSet | None = None) -> TrainResult:
    if run_path is not None:
        record.write_config(run_path, cfg.to_dict())
        record.write_split(run_path, split)
        record.write_skipped(run_path, split.attrs.get("skipped", []))
        if fingerprints is not None:
            record.write_fingerprints(run_path, fingerprints)
    inputs = run_inputs(cfg, split)  # lung masks once (cached), before any epoch
    if run_path is not None and inputs.table is not None:
        record.write_table(run_path, record.ROI_FILE, inputs.table)
    fitted = _fitted(run_path)  # a run killed after its model was saved is not trained again
    if fitted is not None:
        model, history = fitted
    else:
        model, history = fit(cfg, split, class_names, run_path, verbose=verbose, inputs=inputs)
        if run_path is not None:  # saved at once: until then the backup of the last epoch is their only copy
            record.write_table(run_path, record.HISTORY_FILE, history)
            record.write_model(run_path, model)
    if run_path is not None:
        resume.discard_backups(run_path)  # model.keras and history.csv hold what they kept
        shutil.rmtree(run_path / "checkpoints" / "cache", ignore_errors=True)
    metrics, probabilities = evaluate_splits(model, cfg, split, class_names, loader=inputs.loader)
    metrics["train_seconds"] = round(time.perf_counter() - started, 1)
    if run_path is not None:
        if figures:
            _draw_figures(run_path, cfg, split, history, class_names, probabilities)
        record.write_metrics(run_path, metrics)  # last: its presence marks a finished run
    return TrainResult(model, history, split, list(class_names), metrics, run_path, inputs.table, cfg, probabilities)


def _fitted(run_path: Path | None) -> tuple[keras.Model, pd.DataFrame] | None:
    """The saved model and history of a run killed after its fit (``model.keras`` is written after
    ``history.csv``, and ``metrics.json`` last), or None: the run has still to be fitted."""
    if run_path is None or not (run_path / record.MODEL_FILE).is_file():
        return None
    history = RunRecord(run_path).history()
    if history is None or "epoch" not in history:
        _warn(f"{run_path / record.HISTORY_FILE}: missing or unreadable beside model.keras; training again")
        return None
    logger.info("%s: the model of this run is trained and saved; evaluating it", run_path)
    return load_model(run_path / record.MODEL_FILE).model, history


def reusable(run_dir: str | Path, cfg: TrainConfig, compare: Sequence[str] | None = None) -> RunRecord | None:
    """The record of a finished run in ``run_dir`` trained with ``cfg``'s settings (only the keys ``compare``,
    when given), else None: the one check that a run folder matches a configuration."""
    run = RunRecord(Path(run_dir))
    if not run.finished:
        return None
    try:
        run = RunRecord.read(run_dir)
        settings = cfg.to_dict()
        wanted = {key: settings[key] for key in compare} if compare is not None else settings
        return None if run.differences(wanted, TrainConfig.defaults()) else run
    except CovidTfError:
        return None


def train_or_reuse(cfg: TrainConfig, run_dir: str | Path, *, compare: Sequence[str] | None = None,
                   save: bool = True, overwrite: bool = False, verbose: int | str = 0,
                   figures: bool = True) -> tuple[TrainResult, bool]:
    """The finished run in ``run_dir`` when it matches ``cfg`` (:func:`reusable`), else a run of ``cfg`` trained
    now (into ``run_dir``, or only in memory without ``save``); and whether it was reused."""
    found = None if overwrite else reusable(run_dir, cfg, compare)
    if found is None:
        return train_run(cfg, run_dir if save else None, overwrite=overwrite, verbose=verbose, figures=figures), False
    loaded = load_model(found.folder / record.MODEL_FILE)
    settings = TrainConfig(**{**cfg.to_dict(), **_saved_settings(found)})
    return TrainResult(loaded.model, found.history(), found.split(), loaded.class_names, found.metrics() or {},
                       found.folder, found.roi_table(), settings), True


def _saved_settings(found: RunRecord) -> dict:
    known = {item.name for item in dataclasses.fields(TrainConfig)}
    return {key: value for key, value in found.settings.items() if key in known and key != "split_fractions"}


def retrain_on_train_and_val(cfg: TrainConfig, split: pd.DataFrame, class_names: Sequence[str], epochs: int,
                             verbose: int | str = "auto") -> keras.Model:
    """Seed 001's last step: train afresh on train+val for a fixed number of epochs (no early stopping)."""
    merged = split[split["split"].isin(["train", "val"])].copy()
    merged["split"] = "train"  # no validation data: nothing is selected or stopped early
    fixed = dataclasses.replace(cfg, epochs=epochs)
    model, _ = fit(fixed, merged, class_names, None, verbose=verbose, select_best=False)
    return model

"""The shortcut audit: one quick model trained three times on the same grouped split.

The three inputs are the full image (``roi=none``), the lungs only (``lungs-masked``) and the image
with the lungs removed (``lungs-removed``: only what lies outside the dilated lungs; see
:mod:`covid_tf.lungs.roi.inputs`). A model that still separates the classes with the lungs removed
has learned something other than lung findings (markers, borders, positioning, the hospital a film
came from), so the data carries shortcuts outside the lungs (DeGrave et al., Nature Machine
Intelligence 2021). When the dataset's ``metadata.csv`` has a ``source`` column with two or more
sources, the audit also measures how well the source can be told from the pixels
(:mod:`covid_tf.evaluation.source_probe`).

The audit folder holds ``split.csv`` (the one split of all three runs), ``runs/<roi>/`` (ordinary run
folders: ``evaluate``, ``explain`` and ``predict`` work on them), ``audit.json`` and ``audit.png``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from covid_tf import config
from covid_tf.errors import CovidTfError
from covid_tf.evaluation.metrics import positive_class_index, to_jsonable
from covid_tf.io_utils import refuse_output_inside_inputs, resolved_path
from covid_tf.lungs.roi.modes import MODES
from covid_tf.runs import record
from covid_tf.runs.config import TrainConfig
from covid_tf.runs.record import RunRecord
from covid_tf.workflows.train import prepare_split, train_or_reuse

# (name shown to the reader, training ROI mode), in the order of the table and the figure.
AUDIT_MODES = ("none", "lungs-masked", "lungs-removed")
VARIANTS = tuple((MODES[mode].title, mode) for mode in AUDIT_MODES)
DEFAULT_MODEL = "baseline"
DEFAULT_IMAGE_SIZE = 96
DEFAULT_EPOCHS = 6
DEFAULT_THRESHOLD = 0.80  # lungs-removed ROC-AUC from which the data is said to carry shortcuts
TABLE_COLUMNS = ("variant", "roi", "roc_auc", "ci_low", "ci_high", "accuracy", "n_test", "roi_fallbacks",
                 "seconds", "run_dir")


@dataclass
class AuditResult:
    """What an audit found: one table row per variant, the verdict, the source probe, the files written."""

    table: pd.DataFrame
    shortcuts: bool
    verdict: str
    class_names: list[str]
    source: dict | None
    out_dir: Path
    json_path: Path
    figure_path: Path
    seconds: float
    occlusion: dict | None = None  # the occlusion check of the full-image model (occlusion.json's content)


def audit_config(data: str | Path, *, classes: Sequence[str] | None = None, model: str = DEFAULT_MODEL,
                 image_size: int = DEFAULT_IMAGE_SIZE, epochs: int = DEFAULT_EPOCHS, seed: int = config.SEED,
                 batch_size: int = config.BATCH_SIZE,
                 split_fractions: Sequence[float] = config.DEFAULT_SPLIT_FRACTIONS,
                 n_bootstrap: int = 1000) -> TrainConfig:
    """The training configuration shared by the three runs (``roi`` and ``split_file`` set per run)."""
    if epochs < 1 or image_size < 16:
        raise CovidTfError(f"the audit needs --epochs >= 1 and --image-size >= 16, got {epochs} and {image_size}")
    return TrainConfig(data=str(data), model=model, image_size=image_size, epochs=epochs, seed=seed,
                       batch_size=batch_size, classes=list(classes) if classes else None,
                       split_fractions=tuple(split_fractions), n_bootstrap=n_bootstrap, patience=epochs)


def train_variant(cfg: TrainConfig, run_dir: Path, overwrite: bool = False, verbose: int | str = 0,
                  figures: bool = True) -> tuple[dict, int]:
    """Metrics of the run of ``cfg`` in ``run_dir`` (trained now, or reused when finished with the same settings)
    and how many images it used whole for want of plausible lungs; ``figures``: draw the run's own figures."""
    result, _ = train_or_reuse(cfg, run_dir, overwrite=overwrite, verbose=verbose, figures=figures)
    table = result.roi_table
    fallbacks = 0 if table is None else int((~table["roi_applied"].astype(str).str.lower().eq("true")).sum())
    return result.metrics, fallbacks


def _row(name: str, mode: str, metrics: dict, fallbacks: int, run_dir: Path) -> dict:
    test = metrics.get("test") or {}
    low, high = (test.get("ci95") or {}).get("roc_auc", [None, None])
    values = (name, mode, test.get("roc_auc"), low, high, test.get("accuracy"), test.get("n"), fallbacks,
              metrics.get("train_seconds"), str(run_dir))
    return dict(zip(TABLE_COLUMNS, values))


def auc_interval(row: pd.Series | dict) -> str:
    """``0.973 [0.951, 0.990]`` from a row with ``roc_auc``, ``ci_low``, ``ci_high`` (``undefined`` when None)."""
    if row["roc_auc"] is None or pd.isna(row["roc_auc"]):
        return "undefined"
    if row["ci_low"] is None or pd.isna(row["ci_low"]):
        return f"{row['roc_auc']:.3f}"
    return f"{row['roc_auc']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def _auc_text(row: pd.Series | dict) -> str:
    return f"ROC-AUC {auc_interval(row)}"


def verdict(table: pd.DataFrame, class_names: Sequence[str], threshold: float = DEFAULT_THRESHOLD) -> tuple[bool, str]:
    """``(shortcuts, text)``: shortcuts when the lungs-removed model's test ROC-AUC is at least ``threshold``."""
    rows = {row["roi"]: row for _, row in table.iterrows()}
    removed, full, lungs = rows["lungs-removed"], rows["none"], rows["lungs-masked"]
    if len(class_names) == 2:
        positive = class_names[positive_class_index(class_names)]
        negative = next(name for name in class_names if name != positive)
        task = f"separates {positive} from {negative}"
    else:
        task = "separates the classes"
    auc = removed["roc_auc"]
    if auc is None or pd.isna(auc):
        return False, "No verdict: the lungs-removed model's test ROC-AUC is undefined (one class in the test set?)."
    if auc >= threshold:
        text = (f"SHORTCUTS OUTSIDE THE LUNGS: with the lungs removed, the model still {task} "
                f"({_auc_text(removed)} >= {threshold:.2f}). The data carries shortcuts outside the lungs "
                "(markers, borders, positioning, the source of the film): a high full-image ROC-AUC on this data "
                "is not evidence that a model reads the lungs.")
    else:
        text = (f"No strong shortcut outside the lungs: with the lungs removed the model reaches {_auc_text(removed)}"
                f", below {threshold:.2f}.")
        if removed["ci_high"] is not None and not pd.isna(removed["ci_high"]) and removed["ci_high"] >= threshold:
            text += " Its 95% CI reaches the threshold, so more test images are needed to be sure."
        elif auc >= 0.65:
            text += " It is still well above chance (0.5): some class signal lies outside the lungs."
    text += f" Full image: {_auc_text(full)}; lungs only: {_auc_text(lungs)}."
    return bool(auc >= threshold), text


def run_audit(data: str | Path, out_dir: str | Path, *, classes: Sequence[str] | None = None,
              model: str = DEFAULT_MODEL, image_size: int = DEFAULT_IMAGE_SIZE, epochs: int = DEFAULT_EPOCHS,
              seed: int = config.SEED, threshold: float = DEFAULT_THRESHOLD, batch_size: int = config.BATCH_SIZE,
              split_fractions: Sequence[float] = config.DEFAULT_SPLIT_FRACTIONS, n_bootstrap: int = 1000,
              overwrite: bool = False, verbose: int | str = 0, run_figures: bool = True,
              on_step: Callable[[str], None] | None = None) -> AuditResult:
    """Train the three variants on one grouped split; write ``audit.json`` and ``audit.png``.

    Finished runs of an earlier audit with the same settings are reused (``overwrite`` trains them again);
    ``run_figures=False`` leaves out each run's own figures (``runs/<roi>/figures/``); ``on_step`` receives
    one line per step (e.g. ``print``).
    """
    from covid_tf.evaluation.source_probe import source_predictability
    from covid_tf.figures.lungs import plot_audit
    if not 0.5 <= threshold <= 1.0:
        raise CovidTfError(f"--shortcut-auc must be in [0.5, 1], got {threshold}")
    out = Path(out_dir)
    refuse_output_inside_inputs(out, [data])
    say = on_step or (lambda _line: None)
    started = time.perf_counter()
    base = audit_config(data, classes=classes, model=model, image_size=image_size, epochs=epochs, seed=seed,
                        batch_size=batch_size, split_fractions=split_fractions, n_bootstrap=n_bootstrap)
    split, class_names = prepare_split(base)
    if not (split["split"] == "test").any():
        raise CovidTfError(f"{data}: the split has no test images; the audit needs some")
    out.mkdir(parents=True, exist_ok=True)
    split_file = record.write_split(out, split)
    rows = []
    for name, mode in VARIANTS:
        say(f"training the {name} model (roi={mode}) ...")
        cfg = dataclasses.replace(base, roi=mode, split_file=str(split_file))
        run_dir = out / "runs" / mode
        metrics, fallbacks = train_variant(cfg, run_dir, overwrite, verbose, run_figures)
        rows.append(_row(name, mode, metrics, fallbacks, run_dir))
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    shortcuts, text = verdict(table, class_names, threshold)
    say("the occlusion check of the full-image model ...")
    check = occlusion_of_full_model(out, data, split_file, classes, n_bootstrap, seed, batch_size)
    say("probing the source of the images ...")
    source = source_predictability(base.data, split, seed=seed, n_bootstrap=n_bootstrap)
    figure_path = out / "audit.png"
    plot_audit(table, threshold=threshold, source=source, path=figure_path)
    seconds = round(time.perf_counter() - started, 1)
    summary = {"data": resolved_path(data), "classes": list(classes) if classes else None,
               "class_names": list(class_names), "model": model, "image_size": image_size, "epochs": epochs,
               "seed": seed, "batch_size": batch_size, "split_fractions": list(split_fractions),
               "n_bootstrap": n_bootstrap, "threshold": threshold, "split_file": str(split_file),
               "n": {name: int((split["split"] == name).sum()) for name in config.SPLIT_NAMES},
               "variants": table.to_dict("records"), "shortcuts_outside_lungs": shortcuts, "verdict": text,
               "source": source, "occlusion": check, "figure": str(figure_path), "seconds": seconds}
    json_path = record.write_audit(out, to_jsonable(summary))
    return AuditResult(table, shortcuts, text, list(class_names), source, out, json_path, figure_path, seconds,
                       check)


def occlusion_of_full_model(out: Path, data, split_file: Path, classes, n_bootstrap: int, seed: int,
                            batch_size: int) -> dict:
    """The occlusion check (:mod:`covid_tf.workflows.occlusion`) of the audit's full-image model on its test
    split, written to ``out/occlusion/``: the summary, or ``{"error": ...}`` when it cannot run (no lungs)."""
    from covid_tf.workflows.occlusion import run_occlusion

    try:
        check = run_occlusion(out / "runs" / "none" / record.MODEL_FILE, data, out / "occlusion",
                              split_file=split_file, subset="test", classes=classes, n_bootstrap=n_bootstrap,
                              seed=seed, batch_size=batch_size, overwrite=True)
    except CovidTfError as error:
        return {"error": str(error)}
    return check.summary


def train_roi_run(audit_dir: str | Path, roi: str, verbose: int | str = 0, run_figures: bool = True) -> Path:
    """Train (or reuse) the audit's quick model with another ``roi`` (e.g. ``lungs``) on the audit's split, into
    ``AUDIT_DIR/runs/<roi>``; return that run folder (``run_figures``: as in :func:`run_audit`)."""
    saved = RunRecord(Path(audit_dir)).audit()
    base = audit_config(saved["data"], classes=saved["classes"], model=saved["model"],
                        image_size=saved["image_size"], epochs=saved["epochs"], seed=saved["seed"],
                        batch_size=saved["batch_size"], split_fractions=saved["split_fractions"],
                        n_bootstrap=saved["n_bootstrap"])
    run_dir = Path(audit_dir) / "runs" / roi
    train_variant(dataclasses.replace(base, roi=roi, split_file=saved["split_file"]), run_dir, verbose=verbose,
                  figures=run_figures)
    return run_dir


def audit_table(result: AuditResult | dict) -> pd.DataFrame:
    """The audit as a reader's table: one row per variant with its ROC-AUC and 95% CI (and the source probe)."""
    rows = result.table.to_dict("records") if isinstance(result, AuditResult) else result["variants"]
    source = result.source if isinstance(result, AuditResult) else result.get("source")
    shown = [{"model input": row["variant"], "train --roi": row["roi"], "test ROC-AUC [95% CI]": auc_interval(row),
              "test images": row["n_test"]} for row in rows]
    if source and source.get("available"):
        shown.append({"model input": "source from simple features", "train --roi": "-",
                      "test ROC-AUC [95% CI]": auc_interval(source), "test images": source["n_test"]})
    check = result.occlusion if isinstance(result, AuditResult) else result.get("occlusion")
    shown += _occlusion_rows(check or {})
    return pd.DataFrame(shown)


def _occlusion_rows(check: dict) -> list[dict]:
    """The occlusion check of the full-image model as rows of :func:`audit_table` (original, then each fill)."""
    rows = []
    for variant, fills in (check.get("results") or {}).items():
        for fill, entry in ({None: fills} if "auc" in fills else fills).items():
            low, high = entry.get("ci95") or (None, None)
            name = f"full-image model, {variant.replace('_', ' ')}" + (f" ({fill})" if fill else "")
            rows.append({"model input": name, "train --roi": "none", "test images": entry.get("n"),
                         "test ROC-AUC [95% CI]": auc_interval({"roc_auc": entry.get("auc"), "ci_low": low,
                                                                "ci_high": high})})
    return rows

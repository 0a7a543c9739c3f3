"""Export the figures of a run or evaluation folder in the formats a user needs (the ``figures`` command).

The figures are redrawn from what the folder holds, not converted from its PNGs, so a PDF or SVG is a
real vector file:

- an ``evaluate --out`` folder: ``predictions.csv`` (true and predicted labels, probabilities) and its
  ``config.json``; the image grids when the images still exist; the training curves of the evaluated
  model's run when its ``history.csv`` is there;
- a ``train --out`` run: ``history.csv``, and the ``split.csv`` rows predicted again by ``model.keras``
  (training drew them from the probabilities it had just computed).

Nothing is written into the run folder or into any folder the figures are drawn from.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from covid_tf import config, figures
from covid_tf.data.mask_files import mask_paths_of
from covid_tf.errors import CovidTfError
from covid_tf.evaluation.tables import PROB_PREFIX, class_names_from_columns, label_indices
from covid_tf.figures.run import FIGURE_NAMES, make_figures, run_figures, save_figures
from covid_tf.io_utils import refuse_output_inside_inputs
from covid_tf.runs import record
from covid_tf.runs.inference import load_model
from covid_tf.runs.record import PREDICTIONS_FILE, RunRecord


def parse_formats(text: str | Sequence[str]) -> list[str]:
    """``"png,pdf"`` (or a list) -> ``["png", "pdf"]``; ``CovidTfError`` for a format :func:`save_figure` lacks."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    formats = list(dict.fromkeys(part.strip().lower().lstrip(".") for part in parts if part.strip()))
    unknown = [kind for kind in formats if kind not in figures.FORMATS]
    if not formats or unknown:
        raise CovidTfError(f"--format takes a comma-separated list of {', '.join(figures.FORMATS)}, got {text!r}")
    return formats


def input_folders(run_dir: Path, run: RunRecord) -> list[Path]:
    """The folders the figures are drawn from: the run, its data folder and the folders of its images."""
    folders = [run_dir]
    data = run.text("data")
    if data and Path(data).is_dir():
        folders.append(Path(data))
    table = run.predictions()
    table = run.split() if table is None else table
    if table is not None:
        folders += sorted({Path(path).parent for path in table["path"].astype(str)})
    return folders


def evaluation_figures(run_dir: Path, run: RunRecord) -> dict[str, Figure]:
    """The figures of an ``evaluate --out`` folder, from its ``predictions.csv``."""
    table = run.predictions()
    names = run.class_names() or class_names_from_columns(table.columns)
    missing = [column for column in ("label", "predicted", *(PROB_PREFIX + name for name in names))
               if column not in table.columns]
    if missing:
        raise CovidTfError(f"{run_dir / PREDICTIONS_FILE}: lacks the column(s) {', '.join(missing)}")
    probabilities = _probabilities(table, names, run_dir / PREDICTIONS_FILE)
    try:
        truth, predicted = label_indices(table["label"], names), label_indices(table["predicted"], names)
    except CovidTfError as error:
        raise CovidTfError(f"{run_dir / PREDICTIONS_FILE}: {error}") from None
    paths = table["path"].astype(str).tolist()
    image_size = run.integer("image_size", least=1, most=config.max_image_size())
    images_exist = image_size is not None and all(Path(path).is_file() for path in paths)
    model_path = run.text("model_path")
    history = RunRecord.of_model(model_path).history() if model_path else None
    split = run.text("split")
    return make_figures(truth, probabilities, predicted, names, paths=paths if images_exist else None,
                        image_size=image_size, channels=run.integer("channels", 1, least=1, most=3), history=history,
                        label=f"{split}, n={len(table)}" if split else f"n={len(table)}")


def _probabilities(table: pd.DataFrame, names: Sequence[str], path: Path) -> np.ndarray:
    """The ``prob_<class>`` columns as numbers in [0, 1]; one error naming the first cell that is not one."""
    columns = [PROB_PREFIX + name for name in names]
    values = table[columns].apply(pd.to_numeric, errors="coerce").astype(float)
    bad = ~(values.ge(0) & values.le(1)).to_numpy()
    if bad.any():
        row, column = (int(index[0]) for index in bad.nonzero())
        raise CovidTfError(f"{path}: row {row + 2}, {columns[column]!r}: {table[columns[column]].iloc[row]!r} is not "
                           "a probability (a number from 0 to 1)")
    return values.to_numpy()


def training_run_figures(run: RunRecord, split: str = "test") -> dict[str, Figure]:
    """A finished training run's figures: its history, and the ``split`` rows of ``split.csv`` (``val`` when it has
    no test rows) predicted again by its ``model.keras`` through the run's own ROI (a run keeps no predictions)."""
    history = run.history()
    table = run.split()
    chosen = None if table is None else next((name for name in (split, "val") if (table["split"] == name).any()), None)
    if chosen is None:
        return run_figures(history, model_name=run.model_name or "?")
    rows = table[table["split"] == chosen]
    rows = rows[rows["path"].map(lambda p: Path(p).is_file())]
    if rows.empty:
        raise CovidTfError(f"{run.folder / record.SPLIT_FILE}: none of the {chosen!r} images exist any more; "
                           "cannot draw the figures")
    loaded = load_model(run.folder / record.MODEL_FILE)
    mask_paths = mask_paths_of(rows)
    batch_size = run.integer("batch_size", config.BATCH_SIZE, 1, config.MAX_BATCH_SIZE)
    probabilities = loaded.predict_paths(rows["path"].tolist(), batch_size, mask_paths)
    return run_figures(history, label_indices(rows["label"].astype(str), loaded.class_names), probabilities,
                       loaded.class_names, model_name=run.model_name or "?", label=f"{chosen}, n={len(rows)}")


def export_figures(run_dir: str | Path, out_dir: str | Path, formats: str | Sequence[str] = ("png",), *,
                   split: str = "test", overwrite: bool = False) -> list[Path]:
    """Redraw the figures of ``run_dir`` (a train or evaluate output folder) into ``out_dir``, once per format.

    Files are named as in the run (``confusion_matrix.pdf``, ...). Raises ``CovidTfError`` for a folder that
    is no run, an ``out_dir`` inside the run or an input folder, existing files without ``overwrite``, and a
    run with nothing to draw.
    """
    run_dir, out_dir = Path(run_dir).expanduser(), Path(out_dir).expanduser()
    kinds = parse_formats(formats)
    if not run_dir.is_dir():
        raise CovidTfError(f"{run_dir}: no such run folder")
    run = RunRecord.read(run_dir)
    refuse_output_inside_inputs(out_dir, input_folders(run_dir, run))
    if (run_dir / PREDICTIONS_FILE).is_file():
        drawn = evaluation_figures(run_dir, run)
    elif (run_dir / record.MODEL_FILE).is_file():
        drawn = training_run_figures(run, split=split)
    else:
        history = run.history()
        drawn = {} if history is None else {"training_curves": figures.plot_training_curves(history)}
    if not drawn:
        raise CovidTfError(f"{run_dir}: holds nothing to draw (no {PREDICTIONS_FILE}, model.keras or history.csv)")
    targets = [out_dir / f"{Path(FIGURE_NAMES[key]).stem}.{kind}" for key in drawn for kind in kinds]
    existing = [target.name for target in targets if target.exists()]
    if existing and not overwrite:
        raise CovidTfError(f"{out_dir}: already holds {', '.join(existing[:3])}"
                           f"{' ...' if len(existing) > 3 else ''}; choose another --out or pass --overwrite")
    return save_figures(drawn, out_dir, kinds)

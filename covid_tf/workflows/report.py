"""A self-contained HTML report comparing training runs (figures embedded as base64 PNG).

Each run folder holds ``metrics.json`` (either ``{"val": {...}, "test": {...}}`` with
:func:`covid_tf.evaluate.compute_metrics` dicts, or one flat such dict), ``config.json`` (at least
``model``) and PNG figures at its top level or under ``figures/``. The page has the date and the covid_tf
version that wrote it, warnings where a number needs care (a confidence interval that collapsed to one value,
fewer than 30 images or patients), a table of the runs, a comparison chart, a patient-level table when the
metrics have one, and then each run's configuration (model, image size, epochs, learning rate, ROI, data,
software versions) and figures (ROC and precision-recall curves side by side). Paths are written relative to
the report's folder, never absolute. It loads nothing from outside: no scripts, fonts or remote images.
A value of the wrong type in ``config.json`` or ``metrics.json`` is shown as ``?``
(:mod:`covid_tf.workflows.report_values`); a file that is not a JSON object is one error naming it.

Only real PNG files that lie inside the run folder are embedded: a symbolic link (say
``figures/x.png -> /etc/passwd``), a file reached through a linked folder, or a file named ``.png`` that
is not a PNG is left out and named in a note on the page. A folder with neither ``metrics.json`` nor
``config.json`` is not a run, and the report refuses it.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from covid_tf.errors import CovidTfError
from covid_tf.io_utils import atomic_write_text, check_writable_output, refuse_output_inside_inputs
from covid_tf.runs import record
from covid_tf.runs.record import RunRecord
from covid_tf.workflows.report_page import RunSummary, figure_problem, render_html
from covid_tf.workflows.report_values import ODD

FIGURE_ORDER = ("training_curves", "confusion_matrix", "roc_curves", "pr_curves", "reliability_diagram")
SUBSETS = ("test", "val")  # the splits of a train run the report can show


def select_split(metrics: Mapping[str, Any], split: str = "test") -> tuple[str | None, dict[str, Any] | None]:
    """The metrics dict of ``split`` (or of the other split, or the flat dict) and which one it is."""
    if split in metrics and isinstance(metrics[split], Mapping):
        return split, dict(metrics[split])
    if "accuracy" in metrics:
        return None, dict(metrics)
    for other in ("test", "val"):
        if isinstance(metrics.get(other), Mapping):
            return other, dict(metrics[other])
    return None, None


def _figure_rank(figure: Path) -> int:
    """Known figures in pipeline order (ROC beside precision-recall), any others after them."""
    return FIGURE_ORDER.index(figure.stem) if figure.stem in FIGURE_ORDER else len(FIGURE_ORDER)


def load_run(run_dir: str | Path, *, split: str = "test") -> RunSummary:
    """Read one run folder's metrics, model name and figure paths."""
    path = Path(run_dir)
    if not path.is_dir():
        raise CovidTfError(f"{path}: run folder not found")
    metrics_file, config_file = path / record.METRICS_FILE, path / record.CONFIG_FILE
    if not record.is_run_folder(path):
        raise CovidTfError(f"{path}: not a run folder (no metrics.json or config.json); give a train or "
                           "evaluate --out folder")
    chosen_split, metrics = (None, None)
    run = RunRecord.read(path, required=False)
    data = run.metrics()
    if data is not None:
        chosen_split, metrics = select_split(data, split)
    config: dict[str, Any] = dict(run.settings)
    model = config.get("model") if isinstance(config.get("model"), str) and config.get("model") else ODD
    figures, left_out = figure_files(path)
    figures.sort(key=_figure_rank)
    finished = next((f for f in (metrics_file, config_file) if f.is_file()), None)
    date = (datetime.datetime.fromtimestamp(finished.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
            if finished is not None else None)
    return RunSummary(path.name, path, model, chosen_split, metrics, figures, config, date, left_out)


def figure_files(run_dir: Path) -> tuple[list[Path], list[str]]:
    """The PNG figures of a run (top level and ``figures/``) that may be embedded, and those left out."""
    figures, left_out = [], []
    for candidate in sorted(run_dir.glob("*.png")) + sorted((run_dir / "figures").glob("*.png")):
        problem = figure_problem(candidate, run_dir.resolve())
        if problem is None:
            figures.append(candidate)
        else:
            left_out.append(f"{candidate.relative_to(run_dir).as_posix()}: {problem}")
    return figures, left_out


def write_html_report(
    run_dirs: Iterable[str | Path],
    out_path: str | Path,
    *,
    title: str = "covid_tf report",
    split: str = "test",
) -> Path:
    """Write one self-contained HTML page comparing ``run_dirs`` on ``split``; return its path."""
    runs = [load_run(run_dir, split=split) for run_dir in run_dirs]
    if not runs:
        raise CovidTfError("no run folders given for the report")
    out_dir = Path(out_path).expanduser().resolve().parent
    return atomic_write_text(out_path, render_html(runs, title=title, out_dir=out_dir))


def write_report(run_dirs: Iterable[str | Path], out_path: str | Path, *, title: str = "covid_tf report",
                 subset: str = "test", overwrite: bool = False) -> Path:
    """The ``report`` command: check the output (an HTML file, outside the runs, not there unless ``overwrite``),
    then :func:`write_html_report`."""
    run_dirs, out = list(run_dirs), Path(out_path)
    if subset not in SUBSETS:
        raise CovidTfError(f"--subset: test or val, got {subset!r}")
    refuse_output_inside_inputs(out, [], folder=False, read_folders=[run for run in run_dirs if Path(run).is_dir()])
    check_writable_output(out, folder=False)
    if out.is_dir():
        raise CovidTfError(f"{out}: is a folder; --out takes an HTML file name")
    if out.exists() and not overwrite:
        raise CovidTfError(f"{out}: already exists; choose another --out or pass --overwrite")
    return write_html_report(run_dirs, out, title=title, split=subset)

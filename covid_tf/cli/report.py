"""A self-contained HTML report comparing training runs (figures embedded as base64 PNG).

Each run folder holds ``metrics.json`` (either ``{"val": {...}, "test": {...}}`` with
:func:`covid_tf.evaluate.compute_metrics` dicts, or one flat such dict), ``config.json`` (at least
``model``) and PNG figures at its top level or under ``figures/``. The page has a table of the runs,
a comparison chart, a patient-level table when the metrics have one, and then every figure of every
run. It loads nothing from outside: no scripts, fonts or remote images.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from covid_tf.errors import CovidTfError
from covid_tf.figures import plot_run_comparison
from covid_tf.io_utils import atomic_write_text

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #1f2328; line-height: 1.45; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: 1rem 0; font-size: .92rem; }
th, td { border: 1px solid #d0d7de; padding: .35rem .7rem; text-align: right; }
th { background: #f6f8fa; } td:first-child, td:nth-child(2), th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fbfcfd; }
.ci { color: #59636e; font-size: .85em; }
.note { color: #59636e; font-size: .9rem; }
figure { display: inline-block; margin: .6rem; vertical-align: top; max-width: 100%; }
figure img { max-width: 100%; max-height: 520px; border: 1px solid #d0d7de; }
figcaption { font-size: .85rem; color: #59636e; text-align: center; }
"""


@dataclass
class RunSummary:
    """What the report shows of one run folder."""

    name: str
    path: Path
    model: str
    split: str | None
    metrics: dict[str, Any] | None
    figures: list[Path] = field(default_factory=list)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CovidTfError(f"{path}: cannot read JSON ({error})") from error


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


def load_run(run_dir: str | Path, *, split: str = "test") -> RunSummary:
    """Read one run folder's metrics, model name and figure paths."""
    path = Path(run_dir)
    if not path.is_dir():
        raise CovidTfError(f"{path}: run folder not found")
    metrics_file, config_file = path / "metrics.json", path / "config.json"
    chosen_split, metrics = (None, None)
    if metrics_file.is_file():
        data = _read_json(metrics_file)
        if not isinstance(data, Mapping):
            raise CovidTfError(f"{metrics_file}: expected a JSON object")
        chosen_split, metrics = select_split(data, split)
    model = "?"
    if config_file.is_file():
        config = _read_json(config_file)
        if isinstance(config, Mapping) and "model" in config:
            model = str(config["model"])
    figures = sorted(path.glob("*.png")) + sorted((path / "figures").glob("*.png"))
    return RunSummary(path.name, path, model, chosen_split, metrics, figures)


def _number(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def _with_ci(metrics: Mapping[str, Any], name: str) -> str:
    value = metrics.get(name)
    interval = (metrics.get("ci95") or {}).get(name) or [None, None]
    text = html.escape(_number(value))
    if value is not None and interval[0] is not None and interval[1] is not None:
        text += f' <span class="ci">[{_number(interval[0])}, {_number(interval[1])}]</span>'
    return text


def _summary_table(runs: list[RunSummary]) -> str:
    header = ["run", "model", "split", "n", "accuracy", "balanced accuracy", "ROC-AUC", "ECE"]
    lines = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for run in runs:
        metrics = run.metrics or {}
        cells = [html.escape(run.name), html.escape(run.model), html.escape(run.split or "-"),
                 html.escape(str(metrics.get("n", "n/a"))), _with_ci(metrics, "accuracy"),
                 _with_ci(metrics, "balanced_accuracy"), _with_ci(metrics, "roc_auc"),
                 html.escape(_number(metrics.get("ece")))]
        lines.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _patient_table(runs: list[RunSummary]) -> str:
    rows = []
    for run in runs:
        for rule, metrics in ((run.metrics or {}).get("patients") or {}).items():
            cells = [html.escape(run.name), html.escape(run.model), html.escape(rule),
                     html.escape(str(metrics.get("n", "n/a"))), _with_ci(metrics, "accuracy"),
                     _with_ci(metrics, "balanced_accuracy"), _with_ci(metrics, "roc_auc")]
            rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    if not rows:
        return ""
    header = ["run", "model", "rule", "patients", "accuracy", "balanced accuracy", "ROC-AUC"]
    return "\n".join(
        ["<h2>Patient level</h2>", "<table>",
         "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>", *rows, "</table>"]
    )


def _img_tag(png_bytes: bytes, alt: str) -> str:
    encoded = base64.b64encode(png_bytes).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}">'


def _comparison_figure(runs: list[RunSummary]) -> str:
    with_metrics = {}
    for run in runs:
        if run.metrics is not None:
            label = run.name
            while label in with_metrics:
                label += "'"
            with_metrics[label] = {**run.metrics, "model": run.model}
    if not with_metrics:
        return ""
    fig = plot_run_comparison(with_metrics)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return f"<figure>{_img_tag(buffer.getvalue(), 'comparison of runs')}</figure>"


def render_html(runs: list[RunSummary], *, title: str = "covid_tf report") -> str:
    """The report page as a string."""
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f"<h1>{html.escape(title)}</h1>",
        '<p class="note">Metrics with 95% bootstrap confidence intervals in brackets; '
        "ECE = expected calibration error.</p>",
        "<h2>Runs</h2>", _summary_table(runs), _comparison_figure(runs), _patient_table(runs),
    ]
    for run in runs:
        parts.append(f"<h2>{html.escape(run.name)} <small>({html.escape(run.model)})</small></h2>")
        parts.append(f'<p class="note">{html.escape(str(run.path))}</p>')
        for note in (run.metrics or {}).get("notes") or []:
            parts.append(f'<p class="note">{html.escape(str(note))}</p>')
        if not run.figures:
            parts.append('<p class="note">No figures.</p>')
        for figure_path in run.figures:
            caption = figure_path.relative_to(run.path).as_posix()
            try:
                png_bytes = figure_path.read_bytes()
            except OSError as error:
                raise CovidTfError(f"{figure_path}: cannot read figure ({error})") from error
            image = _img_tag(png_bytes, caption)
            parts.append(f"<figure>{image}<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts += ["</body>", "</html>"]
    return "\n".join(part for part in parts if part) + "\n"


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
    return atomic_write_text(out_path, render_html(runs, title=title))

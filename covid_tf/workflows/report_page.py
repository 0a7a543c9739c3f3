"""The HTML page of the report (:mod:`covid_tf.workflows.report`): its tables, warnings, comparison chart and each
run's section, written from what the runs hold; figures are embedded as base64 PNG, checked again as they are read.

A value of the wrong type is shown as ``?`` (:mod:`covid_tf.workflows.report_values`). Only real PNG files that lie
inside the run folder are embedded (:func:`figure_problem`): a symbolic link, a file reached through a linked
folder, a file named ``.png`` that is not a PNG or one larger than a figure is left out and named in a note.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from covid_tf import config
from covid_tf.errors import CovidTfError
from covid_tf.figures.comparison import plot_run_comparison
from covid_tf.workflows.report_values import ODD, clean_metrics, config_rows, count, plottable, relative_path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A figure larger than this is not one of ours (they are a few hundred KB); it is left out, not embedded.
MAX_FIGURE_BYTES = 20 * 1024 * 1024

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
figure img { max-width: 100%; max-height: 440px; border: 1px solid #d0d7de; }
figcaption { font-size: .85rem; color: #59636e; text-align: center; }
.warning { background: #fff8c5; border: 1px solid #d4a72c; border-left: 6px solid #bf8700; padding: .5rem 1rem;
           margin: 1rem 0; } .warning li { margin: .2rem 0; }
.warn { color: #9a6700; font-weight: 600; }
table.config td { text-align: left; }
"""
SMALL_N = 30  # below this many images (or patients), point estimates and bootstrap intervals are unstable


@dataclass
class RunSummary:
    """What the report shows of one run folder."""

    name: str
    path: Path
    model: str
    split: str | None
    metrics: dict[str, Any] | None
    figures: list[Path] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    date: str | None = None
    left_out: list[str] = field(default_factory=list)  # "file: reason" of PNG names that are not embedded


def figure_problem(candidate: Path, run_root: Path) -> str | None:
    """Why ``candidate`` must not be embedded (None when it is a real PNG file inside the run folder)."""
    if candidate.is_symlink():
        return "a symbolic link"
    try:
        candidate.resolve(strict=True).relative_to(run_root)
        if not candidate.is_file():
            return "not a regular file"
        size = candidate.stat().st_size
        with candidate.open("rb") as handle:
            head = handle.read(len(PNG_SIGNATURE))
    except ValueError:
        return "outside the run folder"
    except OSError as error:
        return f"cannot read ({error.strerror or error})"
    if head != PNG_SIGNATURE:
        return "not a PNG image"
    return f"{size / 2**20:.0f} MiB, larger than a figure" if size > MAX_FIGURE_BYTES else None


def _number(value: Any, digits: int = 3) -> str:
    """A number of the cleaned metrics (:func:`clean_metrics`): ``n/a`` when absent, ``?`` when odd."""
    return "n/a" if value is None else ODD if value == ODD else f"{float(value):.{digits}f}"


def _degenerate(metrics: Mapping[str, Any], name: str) -> bool:
    """Whether the 95% interval of ``name`` collapsed to one value (too few images or patients to vary)."""
    interval = (metrics.get("ci95") or {}).get(name)
    return isinstance(interval, tuple) and interval[0] == interval[1]


def _with_ci(metrics: Mapping[str, Any], name: str) -> str:
    value = metrics.get(name)
    interval = (metrics.get("ci95") or {}).get(name)
    text = html.escape(_number(value))
    if value is not None and interval == ODD:
        text += f' <span class="ci">[{ODD}]</span>'
    elif value is not None and interval is not None:
        text += f' <span class="ci">[{_number(interval[0])}, {_number(interval[1])}]</span>'
        if _degenerate(metrics, name):
            text += ' <span class="warn" title="the bootstrap interval is one value: too few samples">&#9888;</span>'
    return text


def _n_cell(metrics: Mapping[str, Any]) -> str:
    n = count(metrics.get("n"))
    small = isinstance(n, int) and n < SMALL_N
    flag = ' <span class="warn">&#9888; small</span>' if small else ""
    return html.escape(str(n if n is not None else "n/a")) + flag


def _warnings(runs: list[RunSummary]) -> str:
    """A visible box listing every degenerate interval and every small sample of the report's tables."""
    items = []
    for run in runs:
        levels = [("images", run.metrics or {})] + [(f"patients, {rule} vote", m) for rule, m in
                                                    ((run.metrics or {}).get("patients") or {}).items()]
        for level, metrics in levels:
            n = metrics.get("n")
            if isinstance(n, int) and n < SMALL_N:
                items.append(f"{run.name}: only n = {n} ({level}); the numbers and their intervals are unstable")
            for name in (metrics.get("ci95") or {}):
                if _degenerate(metrics, name):
                    low = metrics["ci95"][name][0]
                    items.append(f"{run.name}: the 95% interval of {name} ({level}) is "
                                 f"[{_number(low)}, {_number(low)}], one value because too few samples let the "
                                 "bootstrap vary: not certainty")
    if not items:
        return ""
    listed = "".join(f"<li>{html.escape(item)}</li>" for item in items)
    return f'<div class="warning"><strong>&#9888; Read with care</strong><ul>{listed}</ul></div>'


def _summary_table(runs: list[RunSummary]) -> str:
    header = ["run", "model", "split", "n", "accuracy", "balanced accuracy", "ROC-AUC", "average precision", "ECE"]
    lines = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for run in runs:
        metrics = run.metrics or {}
        cells = [html.escape(run.name), html.escape(run.model), html.escape(run.split or "-"), _n_cell(metrics),
                 _with_ci(metrics, "accuracy"), _with_ci(metrics, "balanced_accuracy"), _with_ci(metrics, "roc_auc"),
                 html.escape(_number(metrics.get("average_precision"))), html.escape(_number(metrics.get("ece")))]
        lines.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _patient_table(runs: list[RunSummary]) -> str:
    rows = []
    for run in runs:
        for rule, metrics in ((run.metrics or {}).get("patients") or {}).items():
            cells = [html.escape(run.name), html.escape(run.model), html.escape(rule), _n_cell(metrics),
                     _with_ci(metrics, "accuracy"), _with_ci(metrics, "balanced_accuracy"),
                     _with_ci(metrics, "roc_auc")]
            rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    if not rows:
        return ""
    header = ["run", "model", "rule", "patients", "accuracy", "balanced accuracy", "ROC-AUC"]
    return "\n".join(
        ["<h2>Patient level</h2>", "<table>",
         "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>", *rows, "</table>"]
    )


def _external_table(runs: list[RunSummary]) -> str:
    """Is the test really external? Copies of the training images found, the ROC-AUC without and with them, and
    the within-source ROC-AUC, for the evaluations that measured them."""
    rows = []
    for run in runs:
        metrics = run.metrics or {}
        overlap, sources = metrics.get("overlap"), metrics.get("sources")
        if overlap is None and sources is None:
            continue
        copies = ("not checked" if overlap and not overlap["checked"] else
                  f"{overlap['n_copies']} of {overlap['n_test_images']}" + (" (left out)" if overlap["excluded"] else
                                                                           "") if overlap else "-")
        within = "-" if sources is None else (f"{_number(sources['auc'])} [{', '.join(map(_number, sources['ci95']))}]"
                                              if isinstance(sources["ci95"], tuple) else _number(sources["auc"]))
        cells = [run.name, copies, _number(metrics.get("roc_auc")),
                 _number((metrics.get("all_images") or {}).get("roc_auc")), within,
                 "-" if sources is None else f"{sources['pairs']} / {sources['n_sources']}",
                 "; ".join([*(overlap or {}).get("notes", []), *(sources or {}).get("warnings", [])]) or "-"]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in cells) + "</tr>")
    if not rows:
        return ""
    header = ["run", "test images copying training images", "ROC-AUC", "ROC-AUC with the copies",
              "within-source ROC-AUC [95% CI]", "pairs / sources", "notes"]
    return "\n".join(["<h2>Is the test really external?</h2>", "<table>",
                      "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>", *rows, "</table>"])


def _config_table(run: RunSummary, out_dir: Path) -> str:
    """The run's configuration (what config.json holds of it), with paths relative to the report."""
    rows = [("folder", relative_path(run.path, out_dir)), *config_rows(run.config, out_dir), ("date", run.date)]
    cells = "".join(f"<tr><th>{html.escape(name)}</th><td>{html.escape(str(value))}</td></tr>"
                    for name, value in rows if value is not None)
    return f'<table class="config">{cells}</table>'


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
            with_metrics[label] = {**plottable(run.metrics), "model": run.model}
    if not with_metrics:
        return ""
    fig = plot_run_comparison(with_metrics)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return f"<figure>{_img_tag(buffer.getvalue(), 'comparison of runs')}</figure>"


def _run_section(run: RunSummary, out_dir: Path) -> list[str]:
    parts = [f"<h2>{html.escape(run.name)} <small>({html.escape(run.model)})</small></h2>", _config_table(run, out_dir)]
    for note in (run.metrics or {}).get("notes") or []:
        parts.append(f'<p class="note">{html.escape(str(note))}</p>')
    if not run.figures:
        parts.append('<p class="note">No figures.</p>')
    parts += [f'<p class="note">Not embedded: {html.escape(item)}</p>' for item in run.left_out]
    for figure_path in run.figures:
        caption = figure_path.relative_to(run.path).as_posix()
        # Checked again as it is read: nothing may have replaced the file by a link meanwhile.
        problem = figure_problem(figure_path, run.path.resolve())
        if problem is not None:
            parts.append(f'<p class="note">Not embedded: {html.escape(caption)}: {html.escape(problem)}</p>')
            continue
        try:
            png_bytes = figure_path.read_bytes()
        except OSError as error:
            raise CovidTfError(f"{figure_path}: cannot read figure ({error})") from error
        parts.append(f"<figure>{_img_tag(png_bytes, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    return parts


def render_html(runs: list[RunSummary], *, title: str = "covid_tf report", out_dir: str | Path = ".") -> str:
    """The report page as a string; paths are written relative to ``out_dir`` (the report's folder)."""
    written = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    runs = [dataclasses.replace(run, metrics=None if run.metrics is None else clean_metrics(run.metrics))
            for run in runs]  # every number checked once: a value of the wrong type is shown as '?'
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">Written {written} by covid_tf {html.escape(config.VERSION)}. Metrics with 95% bootstrap '
        "confidence intervals in brackets; average precision = area under the precision-recall curve; "
        "ECE = expected calibration error.</p>",
        _warnings(runs), "<h2>Runs</h2>", _summary_table(runs), _comparison_figure(runs), _patient_table(runs),
        _external_table(runs),
    ]
    for run in runs:
        parts += _run_section(run, Path(out_dir))
    parts += ["</body>", "</html>"]
    return "\n".join(part for part in parts if part) + "\n"

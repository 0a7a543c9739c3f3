"""Helpers shared by the benchmarks: machine description, timing, synthetic data, JSON results.

Every ``bench_*.py`` script prints a readable summary and, with ``--json PATH``, writes a result
that ``run_all.py`` turns into a section of ``BENCHMARKS.md``::

    {"title": str, "command": str, "summary": str,
     "targets": [{"name", "value", "limit", "unit", "op" ("<=" or ">="), "met"}],
     "tables": [{"title", "columns", "rows"}], "notes": [str]}

This module imports no TensorFlow, so the start-up benchmark can use it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
if str(PROJECT_ROOT) not in sys.path:  # ``python benchmarks/bench_x.py`` from a fresh checkout
    sys.path.insert(0, str(PROJECT_ROOT))


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ start-up lines (call before importing TensorFlow)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """CPU cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info() -> dict:
    """CPU, cores, memory, Python, TensorFlow and Keras versions, accelerators (imports TensorFlow)."""
    quiet_tensorflow()
    import keras
    import tensorflow as tf

    memory_gib = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory_gib = round(pages / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    gpus = [device.name for device in tf.config.list_physical_devices("GPU")]
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "memory_gib": memory_gib,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "gpus": gpus,
    }


def median_seconds(function: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``function()`` over ``repeats`` runs, after ``warmup`` untimed runs."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def target(name: str, value: float, limit: float, op: str, unit: str = "x") -> dict:
    """One checked target: ``value op limit`` (op ``<=`` or ``>=``)."""
    if op not in ("<=", ">="):
        raise ValueError(f"op must be '<=' or '>=', got {op!r}")
    met = value <= limit if op == "<=" else value >= limit
    return {"name": name, "value": float(value), "limit": float(limit), "op": op, "unit": unit, "met": bool(met)}


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> dict:
    return {"title": title, "columns": list(columns), "rows": [list(row) for row in rows]}


def command_line() -> str:
    """The command that ran this script, relative to the project root (without ``--json``)."""
    arguments = []
    skip = False
    for argument in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if argument == "--json":
            skip = True
            continue
        if argument.startswith("--json="):
            continue
        arguments.append(argument)
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(PROJECT_ROOT)
    return " ".join([".venv/bin/python", str(script), *arguments])


def print_targets(targets: Sequence[dict]) -> None:
    for item in targets:
        status = "met" if item["met"] else "MISSED"
        print(f"target {item['name']}: {item['value']:.3g}{item['unit']} ({item['op']} {item['limit']:g}"
              f"{item['unit']}) {status}")


def write_result(path: str | os.PathLike[str] | None, result: dict) -> None:
    """Write ``result`` (plus the command line) as JSON when ``path`` is given."""
    result.setdefault("command", command_line())
    result.setdefault("targets", [])
    result.setdefault("tables", [])
    result.setdefault("notes", [])
    print_targets(result["targets"])
    if path:
        Path(path).write_text(json.dumps(result, indent=2, default=float))


def synthetic_images(out_dir: Path, count: int, size: int, seed: int = 0) -> tuple[list[str], list[int], list[str]]:
    """Write ``count`` synthetic X-rays (half COVID, half Normal) at ``size`` px; return paths, labels, classes."""
    from covid_tf.synthetic.xray import generate_dataset

    classes = ["COVID", "Normal"]
    metadata = generate_dataset(out_dir, classes=classes, per_class=max(1, count // 2), size=size, seed=seed,
                                overwrite=True)
    paths = [str(out_dir / relative) for relative in metadata["path"]]
    labels = [classes.index(label) for label in metadata["label"]]
    return paths, labels, classes


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB, macOS bytes)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024

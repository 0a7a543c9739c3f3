"""Run every benchmark and rewrite ``BENCHMARKS.md`` with the results (``make bench``).

Each benchmark runs in its own Python process (fresh TensorFlow state, its own memory) with
``--json``; this script collects the results, the machine (CPU model, cores, memory, TensorFlow
and Keras versions, GPUs) and the command that reproduces each, and writes the Markdown file.

Usage: ``python benchmarks/run_all.py [--only startup gradcam scorecam pipeline memory throughput segmenter roi
occlusion epoch threads] [--quick] [--output BENCHMARKS.md]``. ``--quick`` runs smaller versions (a smoke test, not for
the record). The exit status is 0 when every benchmark ran, whether or not its targets were met. Sections of the
existing file that no benchmark writes (hand-written analyses) are kept.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import PROJECT_ROOT, machine_info

# name -> (script, arguments of the full run, arguments of --quick)
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "startup": ("bench_startup.py", [], ["--repeats", "3"]),
    "gradcam": ("bench_gradcam.py", ["--repeats", "5"], ["--images", "16", "--repeats", "2"]),
    "scorecam": ("bench_scorecam.py", [], ["--images", "4", "--size", "32", "--repeats", "1"]),
    "pipeline": ("bench_pipeline.py", [], ["--images", "96", "--repeats", "1", "--size", "64"]),
    "memory": ("bench_memory.py", [], ["--images", "100", "300", "--size", "64"]),
    "throughput": ("bench_throughput.py", [], ["--models", "baseline", "small", "--sizes", "64",
                                               "--min-seconds", "0.2"]),
    "segmenter": ("bench_segmenter.py", [], ["--images", "16", "--repeats", "1"]),
    "ct_lungs": ("bench_ct_lungs.py", [], ["--images", "8", "--sizes", "128", "--repeats", "1"]),
    "roi": ("bench_roi.py", [], ["--images", "32", "--source-size", "64", "--size", "64", "--repeats", "1"]),
    "occlusion": ("bench_occlusion.py", [], ["--images", "40", "--size", "64", "--repeats", "1"]),
    "epoch": ("bench_epoch.py", [], ["--images", "64", "--size", "64", "--repeats", "1"]),
    "threads": ("bench_threads.py", [], ["--size", "64", "--calls", "3"]),
    "overlap": ("bench_overlap.py", [], ["--images", "200", "--reference", "100", "--copies", "40", "--repeats", "1"]),
}

CHANGES = """\
## Changes made for these targets

- `covid_tf/data/pipeline.py`: `cache="auto"` keeps decoded images in memory only up to 256 MiB
  (`MEMORY_CACHE_LIMIT`, was 1 GiB), larger sets cache to a file in `cache_dir`. With 1 GiB,
  10,000 images at 128 px (625 MiB of float32) stayed in memory: peak RSS of a training epoch went
  from 886 MiB (1,000 images) to 1,498 MiB (10,000), 1.69x; with 256 MiB, about 1.15x (table above).
  What remains is TensorFlow's cache-file writer during epoch 1: in a one-off check, the same epoch
  on 10,000 images without a cache peaked at 927 MiB (908 MiB on 1,000), with the file cache 1,013 MiB.
- `covid_tf/data/pipeline.py`: the cache file is named `tfdata-<hash>` from the files (in order), the labels,
  the image size, channels and classes, instead of `tfdata` for every dataset. Before, two datasets
  with the same `cache_dir` (e.g. the train and validation sets of `covid_tf.training.tuning`, which both use
  the default `.cache/`) shared one file, and a later run on other files would read a stale cache.
- `covid_tf/data/pipeline.py`: the shuffle buffer is bounded in bytes as well (`SHUFFLE_BUFFER_BYTES`, 128 MiB),
  not only in images (1,024 RGB images at 224 px would be 588 MiB).
- `tests/test_startup.py` asserts that `--help` imports neither TensorFlow nor Keras.
- `covid_tf/data/pipeline.py` (`make_training_datasets`), `covid_tf/training/fit.py`: PreciseBatchNorm's
  un-augmented training images come from the training set's cache instead of a second, uncached dataset that
  decoded every training image again each epoch (same images, same order; `tests/test_pipeline.py`).
- `covid_tf/data/roi_pipeline.py`: lungs-attention inputs (image + lung-mask channel) decoded in the `tf.data`
  graph (`decode_png`, `tf.image.resize(method="area")`) instead of PIL + OpenCV in Python per image, where that
  gives `roi_image`'s input to within 1e-5 (8-bit PNGs, a mask of the image's size; tested); the Python loader
  for the rest.
"""

CHANGES_HEADING = CHANGES.splitlines()[0].removeprefix("## ")

GPU_NOTE = """\
## GPU and mixed precision

{availability} On a machine with a GPU, run `.venv/bin/python benchmarks/bench_throughput.py --mixed-precision` (it sets
`keras.mixed_precision.set_global_policy("mixed_float16")` before building the models). The
throughput benchmark always builds every architecture under `mixed_float16` and reports the
dtype of its softmax output (see its notes and target above): it must stay float32.
"""


def run_benchmark(name: str, quick: bool, json_dir: Path) -> tuple[dict | None, float, str]:
    """Run one benchmark script; return (result or None, seconds, the reproducing command)."""
    script, full, small = BENCHMARKS[name]
    arguments = small if quick else full
    json_path = json_dir / f"{name}.json"
    command = [sys.executable, str(Path(__file__).resolve().parent / script), *arguments, "--json", str(json_path)]
    reproduce = " ".join([".venv/bin/python", f"benchmarks/{script}", *arguments])
    print(f"\n=== {name}: {reproduce}", flush=True)
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore::DeprecationWarning")
    start = time.perf_counter()
    completed = subprocess.run(command, cwd=PROJECT_ROOT, env=environment, check=False)
    seconds = time.perf_counter() - start
    if completed.returncode != 0 or not json_path.is_file():
        print(f"=== {name} FAILED (exit status {completed.returncode})", flush=True)
        return None, seconds, reproduce
    result = json.loads(json_path.read_text())
    result["command"] = reproduce
    return result, seconds, reproduce


def format_value(item: dict) -> str:
    unit = item["unit"]
    if unit == "x":
        return f"{item['value']:.2f}x"
    return f"{item['value']:.3g}{unit}"


def markdown_table(columns, rows) -> list[str]:
    lines = ["| " + " | ".join(str(column) for column in columns) + " |",
             "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def render(results: dict[str, tuple[dict | None, float, str]], machine: dict, quick: bool, total: float) -> str:
    today = datetime.date.today().isoformat()
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`.venv/bin/python benchmarks/run_all.py`) on {today} in {total / 60:.1f} min;"
        " every section gives the command that reproduces it. Ratios are measured side by side in one run.",
        "",
    ]
    if quick:
        lines += ["**Quick run (`--quick`): small sizes for a smoke test, not for the record.**", ""]
    gpus = ", ".join(machine["gpus"]) or "none"
    lines += [
        "## Machine",
        "",
        *markdown_table(["CPU", "cores", "memory", "OS", "Python", "TensorFlow", "Keras", "GPU"], [[
            machine["cpu"], machine["cores"], f"{machine['memory_gib']} GiB", machine["os"], machine["python"],
            machine["tensorflow"], machine["keras"], gpus,
        ]]),
        "",
        "The cores are shared with other processes, so absolute times vary from run to run; the targets are "
        "ratios of runs interleaved in one process (medians of repeats).",
        "",
        "## Targets",
        "",
    ]
    rows = []
    for name, (result, _, _) in results.items():
        if result is None:
            rows.append([name, "the benchmark failed", "", "", "FAILED"])
            continue
        for item in result["targets"]:
            rows.append([name, item["name"], format_value(item), f"{item['op']} {item['limit']:g}{item['unit']}",
                         "met" if item["met"] else "**missed**"])
    lines += markdown_table(["benchmark", "measure", "value", "target", ""], rows) + [""]
    for name, (result, seconds, command) in results.items():
        if result is None:
            lines += [f"## {name}", "", f"Failed; rerun `{command}` to see why.", ""]
            continue
        lines += [f"## {result['title']}", "", f"`{command}` ({seconds:.0f} s)", "", result.get("summary", ""), ""]
        for item in result["tables"]:
            lines += [f"**{item['title']}**", "", *markdown_table(item["columns"], item["rows"]), ""]
        lines += [f"- {note}" for note in result["notes"]]
        lines += [""] if result["notes"] else []
    availability = (f"Measured with GPU(s): {gpus}; the throughput table used the policy in its summary."
                    if machine["gpus"] else "No GPU was available for these measurements; every number above "
                    "is from the CPU.")
    lines += [CHANGES, GPU_NOTE.format(availability=availability)]
    return "\n".join(lines)


def sections(text: str) -> list[tuple[str, str]]:
    """``(heading, text)`` of each ``## `` section of a Markdown file (its ``### `` subsections included); the
    text before the first one has the heading ''."""
    found: list[tuple[str, list[str]]] = [("", [])]
    for line in text.splitlines():
        if line.startswith("## "):
            found.append((line[3:].strip(), []))
        found[-1][1].append(line)
    return [(heading, "\n".join(lines)) for heading, lines in found]


def keep_hand_written(generated: str, previous: str) -> str:
    """``generated`` with every section of ``previous`` that it does not write itself (the hand-written analyses,
    tried-and-not-taken notes, ...) kept, in their order, before the changes and GPU notes at the end."""
    written = {heading for heading, _ in sections(generated)}
    kept = [body for heading, body in sections(previous) if heading and heading not in written]
    if not kept:
        return generated
    parts = sections(generated)
    tail = next((index for index, (heading, _) in enumerate(parts) if heading == CHANGES_HEADING), len(parts))
    return "\n".join([*(body for _, body in parts[:tail]), *kept, *(body for _, body in parts[tail:])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--output", default=str(PROJECT_ROOT / "BENCHMARKS.md"))
    args = parser.parse_args()

    start = time.perf_counter()
    machine = machine_info()
    print(f"machine: {machine}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="covid_tf_bench_") as temp:
        for name in args.only or list(BENCHMARKS):
            results[name] = run_benchmark(name, args.quick, Path(temp))
    total = time.perf_counter() - start
    output = Path(args.output)
    text = render(results, machine, args.quick, total)
    if output.is_file():  # keep its hand-written sections
        text = keep_hand_written(text, output.read_text())
    temporary = output.with_name(output.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, output)
    print(f"\nwrote {output} ({total / 60:.1f} min)")
    missed = [f"{name}: {item['name']}" for name, (result, _, _) in results.items() if result
              for item in result["targets"] if not item["met"]]
    print("targets missed: " + ("; ".join(missed) if missed else "none"))
    failed = [name for name, (result, _, _) in results.items() if result is None]
    if failed:
        raise SystemExit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()

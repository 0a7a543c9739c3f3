"""Benchmark: the overlap check's accuracy on real films, and its cost inside ``evaluate`` at scale.

**Accuracy** (``--part accuracy``): every film of the dev set (``--data``, the Radiography subset) is fingerprinted
as ``train`` does (:mod:`covid_tf.data.fingerprints`). For each copy kind of
:data:`covid_tf.synthetic.copies.COPY_TRANSFORMS`, ``--copies`` films drawn at random are copied that way and
matched against all stored fingerprints: recall is the share whose original (or a film of its duplicate group) is
found. False matches: every film is matched against all the others; a match between two films of different known
duplicate groups (``inspect``'s groups) is false; the rate is per ordered pair of distinct films.

**Cost** (``--part cost``): ``python -m covid_tf evaluate`` of an untrained model on ``--images`` images (the dev
set's films linked round again under new names, as ``bench_occlusion.py`` does), with and without the check (the
model folder with and without its ``fingerprints.npz`` of ``--reference`` images), each in a process of its own,
``--repeats`` rounds of both, the order turned each round. Without
fingerprints ``evaluate`` makes no frame thumbnails either: the difference is the whole check, thumbnails and
matching. The share is the median of the rounds' differences over the median time without the check. A run of
``evaluate`` varies by more than the check costs on a shared machine, so the check is also measured by its parts:
the decoding pass (``discover``) with and without the query frame thumbnails, side by side in one process, and the
matching of 1,000 test films, timed alone as it runs in ``evaluate``. Target: the check costs at most 10 % of
``evaluate``'s time, by both measures.

Usage: ``python benchmarks/bench_overlap.py [--part accuracy|cost|both] [--copies 400] [--images 12000]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from common import PROJECT_ROOT, quiet_tensorflow, table, target, write_result

quiet_tensorflow()

REAL_DATA = PROJECT_ROOT.parent / "shared" / "data" / "covid19-radiography-subset"


def _read_gray(path: str) -> np.ndarray:
    film = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if film is None:
        raise OSError(f"{path}: unreadable")
    return film


def _thumbnail(film: np.ndarray) -> np.ndarray:
    from covid_tf.data.film_frame import frame_thumbnails

    image = film.astype(np.float32) / 255.0
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return frame_thumbnails(image)


def accuracy(data: Path, copies: int, seed: int) -> tuple[list[list], dict, list[str]]:
    """Recall per copy kind and the false-match rate among distinct films."""
    from covid_tf.data import fingerprints
    from covid_tf.data.discover import discover
    from covid_tf.synthetic.copies import COPY_TRANSFORMS, planted_copy

    index = discover(data, frame_readings="query")
    paths = index.frame["path"].tolist()
    groups = index.frame["duplicate_group"].to_numpy()
    films = [_read_gray(path) for path in paths]
    thumbnails = [index.frame_thumbnails[path] for path in paths]
    stored = fingerprints.stored_fingerprints(np.stack([thumbnail[0] for thumbnail in thumbnails]))
    started = time.perf_counter()
    matches = fingerprints.match_fingerprints(thumbnails, stored)
    all_pairs_seconds = time.perf_counter() - started
    false = [(q, s) for q, s, _ in matches if groups[q] != groups[s]]
    same_group_pairs = int(sum(np.bincount(groups) ** 2) - len(groups))
    distinct_pairs = len(paths) * (len(paths) - 1) - same_group_pairs
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(paths), size=min(copies, len(paths)), replace=False)
    rows = []
    for name in COPY_TRANSFORMS:
        queries = [_thumbnail(planted_copy(films[i], name, rng)) for i in chosen]
        found = {(q, s) for q, s, _ in fingerprints.match_fingerprints(queries, stored)}
        hits = [any((k, s) in found for s in np.flatnonzero(groups == groups[i])) for k, i in enumerate(chosen)]
        wrong = {q for q, s in found if groups[s] != groups[chosen[q]]}
        rows.append([name, len(chosen), round(float(np.mean(hits)), 4), len(wrong)])
    rate = len(false) / max(distinct_pairs, 1)
    summary = {"films": len(paths), "duplicate_groups": len(index.duplicate_groups), "distinct_pairs": distinct_pairs,
               "false_pairs": len(false), "false_rate": rate,
               "films_falsely_matched": len({q for q, _ in false}), "all_pairs_seconds": round(all_pairs_seconds, 1)}
    named = ", ".join(f"{Path(paths[q]).name}~{Path(paths[s]).name}" for q, s in false[:12])
    notes = [f"false pairs (query, stored): {named}" + (" ..." if len(false) > 12 else "")] if false else []
    return rows, summary, notes


def _reference(data: Path, count: int) -> object:
    """Fingerprints of ``count`` real films the evaluated images do not copy: the dev set's Viral Pneumonia films
    and the adult films beside it, and their mirror images, as many times as it takes."""
    from covid_tf.data.overlap import reference_from_thumbnails

    films = sorted((data / "Viral Pneumonia" / "images").glob("*.png"))
    films += sorted((data.parent / "lung-masks-adult").glob("*/images/*.png"))
    thumbnails = [_thumbnail(_read_gray(str(path))) for path in films]
    thumbnails += [thumbnail[..., ::-1] for thumbnail in thumbnails]
    chosen = [thumbnails[k % len(thumbnails)] for k in range(count)]
    return reference_from_thumbnails([f"reference-{k}" for k in range(count)], ["train"] * count, chosen)


def _evaluate_command(model: Path, data: Path, out: Path) -> tuple[float, float]:
    """Seconds, and CPU seconds, of ``python -m covid_tf evaluate`` in a process of its own, as a user runs it (one
    ``evaluate`` after another in one process grows slower: each loads its model anew)."""
    import resource
    import subprocess
    import sys

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    started, cpu_before = time.perf_counter(), cpu()
    subprocess.run([sys.executable, "-m", "covid_tf", "evaluate", str(model), str(data), "--out", str(out),
                    "--overwrite", "-q"], check=True, stdout=subprocess.DEVNULL, cwd=PROJECT_ROOT)
    return time.perf_counter() - started, cpu() - cpu_before


def _evaluate_rounds(runs: list[tuple[str, Path]], data: Path, out: Path, repeats: int
                     ) -> dict[str, list[tuple[float, float]]]:
    """Seconds and CPU seconds of each run folder's ``evaluate`` on ``data``, ``repeats`` rounds after an untimed
    one (the file cache), the order turned each round."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in runs}
    for repeat in range(repeats + 1):
        for name, folder in runs if repeat % 2 else runs[::-1]:
            measured = _evaluate_command(folder / "model.keras", data, out / f"out_{folder.name}")
            if repeat:
                times[name].append(measured)
        if repeat:
            print(f"round {repeat}: " + ", ".join(f"{times[name][-1][0]:.1f} s ({times[name][-1][1]:.1f} s CPU) "
                                                  f"{name}" for name, _ in runs), flush=True)
    return times


def _paired_share(first: list[float], second: list[float]) -> float:
    """The median of the rounds' differences over the median of ``second``: each round runs both, one after the
    other, so the median difference resists a slow spell."""
    return statistics.median(a - b for a, b in zip(first, second)) / statistics.median(second)


def _thumbnails_in_decoding(data: Path, repeats: int) -> float:
    """What the query frame thumbnails add to ``discover``'s decoding pass (threads, global lock and all): the
    median of ``repeats`` paired differences, in one process, the order turned each round."""
    from covid_tf.data.discover import discover

    differences = []
    for repeat in range(repeats):
        seconds = {}
        for readings in ("query", None) if repeat % 2 else (None, "query"):
            started = time.perf_counter()
            discover(data, frame_readings=readings)
            seconds[readings] = time.perf_counter() - started
        differences.append(seconds["query"] - seconds[None])
    return statistics.median(differences)


def _matching_seconds(paths: list[str], data: Path, reference: int, images: int) -> float:
    """Seconds to match ``images`` test films' query thumbnails with ``reference`` fingerprints (1,000 timed,
    scaled; the matching runs alone in ``evaluate`` too)."""
    from covid_tf.data.film_frame import frame_thumbnails
    from covid_tf.data.fingerprints import match_fingerprints

    queries = [frame_thumbnails(_read_gray(path).astype(np.float32) / 255.0) for path in paths[:1000]]
    stored = _reference(data, reference).fingerprints
    started = time.perf_counter()
    match_fingerprints(queries, stored)
    return (time.perf_counter() - started) / len(queries) * images


def cost(data: Path, images: int, reference: int, repeats: int) -> tuple[list[list], dict]:
    """``evaluate`` of ``images`` images with and without the overlap check, alternately (end to end); and the
    check by its parts: the frame thumbnails side by side in the decoding pass, the matching timed alone."""
    import json
    import shutil

    from bench_occlusion import link_images

    from covid_tf.data.discover import discover
    from covid_tf.models.registry import build_model
    from covid_tf.runs.record import write_fingerprints

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        link_images(data, tmp / "data", images)
        checked, unchecked = tmp / "checked", tmp / "unchecked"
        for folder in (checked, unchecked):
            folder.mkdir()
            (folder / "config.json").write_text(json.dumps({"class_names": ["COVID", "Normal"], "roi": "none",
                                                            "model": "baseline"}))
        build_model("baseline", image_size=128, channels=1, num_classes=2).save(checked / "model.keras")
        shutil.copy(checked / "model.keras", unchecked / "model.keras")
        write_fingerprints(checked, _reference(data, reference))
        times = _evaluate_rounds([("with the check", checked), ("without", unchecked)], tmp / "data", tmp, repeats)
        thumbnail_seconds = _thumbnails_in_decoding(tmp / "data", repeats)
        match_seconds = _matching_seconds(discover(tmp / "data").frame["path"].tolist(), data, reference, images)
    (with_check, with_cpu), (without, without_cpu) = ([[pair[k] for pair in times[name]] for k in (0, 1)]
                                                      for name in ("with the check", "without"))
    share, cpu_share = _paired_share(with_check, without), _paired_share(with_cpu, without_cpu)
    rows = [[name, images, round(statistics.median(pair[0] for pair in values), 1)] for name, values in times.items()]
    rows += [[f"{name} (CPU seconds)", images, round(statistics.median(pair[1] for pair in values), 1)]
             for name, values in times.items()]
    rows += [["of the check: frame thumbnails (decoding pass, side by side)", images, round(thumbnail_seconds, 1)],
             ["of the check: matching (1,000 timed alone, scaled)", images, round(match_seconds, 1)]]
    return rows, {"share": share, "cpu_share": cpu_share,
                  "share_by_parts": (thumbnail_seconds + match_seconds) / statistics.median(without),
                  "thumbnails": thumbnail_seconds, "matching": match_seconds,
                  "rounds": [[round(a, 1), round(b, 1)] for a, b in zip(with_check, without)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REAL_DATA)
    parser.add_argument("--part", choices=("accuracy", "cost", "both"), default="both")
    parser.add_argument("--copies", type=int, default=400)
    parser.add_argument("--images", type=int, default=12000)
    parser.add_argument("--reference", type=int, default=1680, help="training and validation images fingerprinted")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"skipped: {args.data} not found (the benchmark needs real films)")
        return
    result = {"title": "Overlap check: copies found, false matches, cost", "targets": [], "tables": [], "notes": []}
    if args.part in ("cost", "both"):
        rows, measured = cost(args.data, args.images, args.reference, args.repeats)
        for row in rows:
            print(f"{row[0]:<55} {row[2]:>8.1f} s ({row[1]} images)")
        print(f"the check costs {100 * measured['share']:.1f} % of evaluate's time end to end "
              f"({100 * measured['cpu_share']:.1f} % of its CPU time), {100 * measured['share_by_parts']:.1f} % by "
              "its parts")
        result["notes"].append("rounds (seconds with the check, without): "
                               + ", ".join(f"{a} / {b}" for a, b in measured["rounds"]))
        result["tables"].append(table(f"evaluate of {args.images} images against {args.reference} fingerprints "
                                      f"(median of {args.repeats})", ["", "images", "seconds"], rows))
        worst = max(measured["share"], measured["share_by_parts"])
        result["targets"].append(target("the check's share of evaluate's time (the larger of end to end and by "
                                        "parts)", 100 * worst, 10, "<=", "%"))
        if args.part == "cost":
            summary = (f"the check: {100 * measured['share']:.1f} % of evaluate end to end, "
                       f"{100 * measured['share_by_parts']:.1f} % by parts")
            write_result(args.json, {**result, "summary": summary})
            return
    rows, summary, notes = accuracy(args.data, args.copies, args.seed)
    for row in rows:
        print(f"{row[0]:<10} recall {row[2]:.4f} of {row[1]} copies ({row[3]} queries matched a wrong film too)")
    print(f"false matches: {summary['false_pairs']} of {summary['distinct_pairs']} ordered pairs of distinct films "
          f"({100 * summary['false_rate']:.4f} %), {summary['films_falsely_matched']} films; all pairs of "
          f"{summary['films']} films in {summary['all_pairs_seconds']} s")
    for note in notes:
        print(note)
    worst = min(row[2] for row in rows)
    result["targets"] += [target("lowest recall per copy kind", worst, 0.99, ">=", ""),
                          target("false matches per pair of distinct films", 100 * summary["false_rate"], 0.1, "<=",
                                 "%")]
    result["tables"].append(table("Recall per copy kind", ["copy kind", "copies", "recall",
                                                           "queries with a wrong match"], rows))
    result["notes"] += [f"false matches: {summary['false_pairs']} of {summary['distinct_pairs']} ordered pairs of "
                        f"distinct films, {summary['films_falsely_matched']} of {summary['films']} films", *notes]
    write_result(args.json, {**result, "summary": f"lowest recall {worst:.4f} over {len(rows)} copy kinds; false "
                                                  f"matches {100 * summary['false_rate']:.4f} % of pairs"})


if __name__ == "__main__":
    main()

"""Hostile inputs, round 2 (issue 14): one test per case, each driving ``python -m covid_tf`` in a real process.

The commands run as children of a ``ForkServer`` (``tests/forkserver.py``): the same ``python -m covid_tf``
that a user types, started in a fraction of a second because TensorFlow is imported once. Nothing here
imports ``covid_tf`` modules (only the kill test's child script registers a tiny model), so the tests hold
whatever the package's layout.

Every command either succeeds or stops with exit 2 and exactly one ``error:`` line (no traceback), and the
input folders are byte-for-byte unchanged afterwards.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import random
import re
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.forkserver import Child, ForkServer
from tests.helpers import TINY_TRANSFER_SCRIPT, make_class_folders, write_png
from tests.hostile import tree_fingerprint, write_dicom

TRACEBACK = "Traceback (most recent call last)"
# A tiny, fast run: the `small` CNN at 32 px, no precise BatchNorm pass, no early stopping.
FAST = ["--model", "small", "--image-size", "32", "--batch-size", "4", "--patience", "100",
        "--precise-bn-images", "0", "--quiet"]


def _permissions_bind() -> bool:
    """Whether a chmod 555 folder stops this process (not for root, unless its capabilities are dropped:
    ``capsh --drop=cap_dac_override,cap_dac_read_search -- -c 'pytest ...'`` runs the tests below as root)."""
    probe = Path(tempfile.mkdtemp())
    try:
        probe.chmod(0o555)
        return not os.access(probe, os.W_OK)
    finally:
        probe.chmod(0o755)
        probe.rmdir()


ROOT = not _permissions_bind()  # "root": file permissions do not stop this process


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def data(server, tmp_path_factory) -> Path:
    """Synthetic X-rays (Radiography layout with metadata.csv), 8 per class, 32 px."""
    out = tmp_path_factory.mktemp("synth") / "data"
    child = server.run(["synth", "--out", out, "--per-class", "8", "--size", "32", "--seed", "1"])
    assert child.code == 0, child.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def finished_run(server, data, tmp_path_factory) -> Path:
    """A finished run of one epoch (model.keras, metrics.json, history.csv, figures/)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    child = server.run(["train", data, "--out", run, "--epochs", "1", *FAST])
    assert child.code == 0, child.stderr[-3000:]
    return run


def cli(server: ForkServer, *argv, timeout: float = 300) -> Child:
    """Run ``python -m covid_tf ARGV`` to its end; never a traceback, whatever the exit status."""
    child = server.run([str(a) for a in argv], timeout=timeout)
    assert TRACEBACK not in child.stderr, f"exit {child.code}, traceback:\n{child.stderr[-3000:]}"
    return child


def assert_error(child: Child, *words: str) -> str:
    """Exit 2 and exactly one line on stderr, starting ``error:`` and naming each of ``words``."""
    lines = [line for line in child.stderr.splitlines() if line.strip()]
    assert child.code == 2, f"exit {child.code}, expected 2; stderr:\n{child.stderr[-2000:]}"
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and len(lines) == 1, f"expected one error line, got:\n{child.stderr[-2000:]}"
    for word in words:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"
    return errors[0]


def history_epochs(run: Path) -> list[int]:
    return pd.read_csv(run / "history.csv")["epoch"].tolist()


def partial_rows(run: Path) -> int:
    """Data rows in checkpoints/history.partial.csv (0 while absent)."""
    try:
        return max(len((run / "checkpoints" / "history.partial.csv").read_text().splitlines()) - 1, 0)
    except OSError:
        return 0


# --------------------------------------------------------------------- 1. SIGKILL at any instant resumes


# Kill chains run in pairs until every kind of kill was made at least COVERAGE times (in the head phase,
# in fine-tuning, just after an epoch is logged, at a random instant) and MIN_KILLS kills in all (6: the
# fewest that can hold three head-phase and three fine-tuning kills); MAX_KILLS stops a chain pair from
# being started after that many, should a kind never come up (the test then fails).
COVERAGE, MIN_KILLS, MAX_KILLS = 3, 6, 40
HEAD_EPOCHS, FINE_TUNE_EPOCHS = 2, 2


def _progress(run: Path) -> int:
    """Epochs the run has safely behind it: its BackupAndRestore metadata, or the finished head phase."""
    done = 0
    for metadata in (run / "checkpoints").glob("backup_*/training_metadata.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            done = max(done, int(json.loads(metadata.read_text())["epoch"]))
    return max(done, HEAD_EPOCHS if (run / "checkpoints" / "head_done.json").exists() else 0)


def _kill_chain(server: ForkServer, script: Path, data: Path, run: Path, rng: random.Random,
                log: list[tuple[str, str]]):
    """Start the same command again and again, killing it at chosen instants, until it finishes.

    Kills come (a) just after an epoch is logged (history.partial.csv grew: the backup of that epoch is
    being written then), (b) at a random instant up to about one epoch's time after the start, or (c) just
    after a backup was completed, which is chosen whenever the cycle before made no progress, so the
    chain always ends. Yields after each kill; any exit other than the kill or success fails the test.
    """
    argv = ["train", data, "--out", run, "--model", "tiny", "--image-size", "32", "--batch-size", "4",
            "--patience", "100", "--precise-bn-images", "0", "--quiet", "--epochs", str(HEAD_EPOCHS),
            "--fine-tune-epochs", str(FINE_TUNE_EPOCHS)]
    stalled, epoch_seconds = 0, 3.0
    # The two kinds of kill take turns (from a random first one), so that few kills cover both; the instant of
    # a random kill is still random.
    turns = itertools.cycle(rng.sample(["after an epoch is logged", "at random"], 2))
    while True:
        child = server.start(argv, script=script)
        mode = "after a backup" if stalled >= 1 else next(turns)
        rows, progress, started = partial_rows(run), _progress(run), time.monotonic()
        delay = rng.uniform(0.0, 1.2 * epoch_seconds)
        while server.poll(child) is None:
            if mode == "after an epoch is logged" and partial_rows(run) > rows:
                epoch_seconds = time.monotonic() - started
                time.sleep(rng.uniform(0.0, 0.05))  # somewhere inside the end-of-epoch writes
                break
            if mode == "after a backup" and _progress(run) > progress:
                break
            if mode == "at random" and time.monotonic() - started > delay:
                break
            time.sleep(0.002)
        phase = "fine_tune" if (run / "checkpoints" / "head_done.json").exists() else "head"
        code = server.kill(child)
        if code == -9:
            stalled = 0 if _progress(run) > progress else stalled + 1
            log.append((phase, mode if mode != "at random" else f"at {delay:.1f} s"))
            yield
            continue
        assert code == 0, (f"a rerun after {len(log)} kill(s) ({log[-3:]}) failed with exit {code}:\n"
                           f"{child.stderr[-3000:]}")
        return


def _kill_kinds(log: list[tuple[str, str]]) -> dict[str, int]:
    """How many kills of each kind the test must cover: by phase, just after an epoch, at a random instant."""
    return {"head": sum(phase == "head" for phase, _ in log),
            "fine_tune": sum(phase == "fine_tune" for phase, _ in log),
            "after an epoch is logged": sum(how == "after an epoch is logged" for _, how in log),
            "at random": sum(how.startswith("at ") for _, how in log)}


@pytest.mark.slow
def test_1_sigkill_at_any_instant_always_resumes_to_the_whole_history(server, tmp_path):
    data = tmp_path / "data"  # 2 classes x 6 images: 4 train, 1 val, 1 test each
    assert server.run(["synth", "--out", data, "--per-class", "6", "--size", "32", "--seed", "2"]).code == 0
    script = tmp_path / "tiny_transfer.py"
    script.write_text(TINY_TRANSFER_SCRIPT)
    rng = random.Random(14)
    log: list[tuple[str, str]] = []
    runs = []
    # Two kill chains at a time (two cores), new chains until every kind of kill is covered.
    while len(log) < MAX_KILLS and (len(log) < MIN_KILLS or min(_kill_kinds(log).values()) < COVERAGE):
        pair = [tmp_path / f"run{len(runs) + i}" for i in range(2)]
        runs += pair
        chains = [_kill_chain(server, script, data, run, random.Random(rng.random()), log) for run in pair]
        while chains:
            for chain in list(chains):
                try:
                    next(chain)
                except StopIteration:
                    chains.remove(chain)
    print(f"{len(log)} kills in {len(runs)} chains: {_kill_kinds(log)}")  # shown by pytest -rA
    phases = [phase for phase, _ in log]
    assert phases.count("head") >= COVERAGE and phases.count("fine_tune") >= COVERAGE, log
    assert sum(how == "after an epoch is logged" for _, how in log) >= COVERAGE, log
    assert sum(how.startswith("at ") for _, how in log) >= COVERAGE, log
    for run in runs:
        history = pd.read_csv(run / "history.csv")
        assert history["epoch"].tolist() == list(range(HEAD_EPOCHS + FINE_TUNE_EPOCHS)), (run, log)
        assert history["phase"].tolist() == ["head"] * HEAD_EPOCHS + ["fine_tune"] * FINE_TUNE_EPOCHS
        assert (run / "metrics.json").is_file() and (run / "model.keras").is_file()
        assert not [p for p in run.rglob("*") if ".tmp" in p.name], run


def test_1_unreadable_latest_backup_falls_back_to_the_previous_one(server, data, tmp_path):
    """A truncated latest.weights.h5 (what a kill during its write left before the fix): the rerun says so
    and resumes from the previous good backup, or from the start, and finishes."""
    run = tmp_path / "run"
    argv = ["train", data, "--out", run, "--epochs", "3", *FAST]
    child = server.start(argv)
    while partial_rows(run) < 2 and server.poll(child) is None:
        time.sleep(0.01)
    server.kill(child)
    backups = list((run / "checkpoints").rglob("*.weights.h5"))
    latest = [p for p in backups if p.parent.name.startswith("backup") and "latest" in p.name]
    assert latest, f"no BackupAndRestore checkpoint to damage: {backups}"
    with latest[0].open("r+b") as handle:
        handle.truncate(13_000)
    rerun = cli(server, *argv)
    assert rerun.code == 0, rerun.stderr[-3000:]
    assert re.search(r"unreadable|damaged|corrupt", rerun.stdout + rerun.stderr, re.IGNORECASE), rerun.stderr
    assert history_epochs(run) == [0, 1, 2]


# ----------------------------------------------------------------------- 2. two runs into one folder


def test_2_two_runs_into_one_out_the_second_stops_naming_the_holder(server, data, tmp_path):
    run = tmp_path / "run"
    argv = ["train", data, "--out", run, "--epochs", "3", *FAST]
    first, second = server.start(argv), server.start(argv)
    for child in (first, second):
        server.wait(child)
        assert TRACEBACK not in child.stderr, child.stderr[-3000:]
    codes = sorted([first.code, second.code])
    assert codes == [0, 2], f"exits {first.code} and {second.code}:\n{first.stderr[-1500:]}\n{second.stderr[-1500:]}"
    winner, loser = (first, second) if first.code == 0 else (second, first)
    assert_error(loser, str(winner.pid), str(run))
    assert history_epochs(run) == [0, 1, 2]
    partial = run / "checkpoints" / "history.partial.csv"
    if partial.exists():
        assert partial.read_text().count("epoch,") == 1


def test_2_corrupted_partial_history_is_explained_not_a_crash(server, data, tmp_path):
    run = tmp_path / "run"
    argv = ["train", data, "--out", run, "--epochs", "3", *FAST]
    child = server.start(argv)
    while partial_rows(run) < 1 and server.poll(child) is None:
        time.sleep(0.01)
    assert server.kill(child) == -9, "the run ended before it could be killed"
    partial = run / "checkpoints" / "history.partial.csv"
    lines = partial.read_text().splitlines()
    # What two runs appending to one log leave: a second header and interleaved rows.
    partial.write_text("\n".join([*lines, lines[0], *lines[1:], "x,1,2"]) + "\n")
    rerun = cli(server, *argv)
    if rerun.code == 2:
        assert_error(rerun, "history.partial.csv")
    else:
        assert rerun.code == 0, rerun.stderr[-3000:]
        assert "history.partial.csv" in rerun.stdout + rerun.stderr  # said what it did with it
        assert history_epochs(run) == [0, 1, 2]


# ------------------------------------------------------------------------ 3. --overwrite deletes first


def test_3_overwrite_that_fails_keeps_the_finished_run(server, data, finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run, symlinks=True)
    before = tree_fingerprint(run)
    # A bad argument: refused before anything is touched.
    assert_error(cli(server, "train", data, "--out", run, "--overwrite", "--epochs", "1", *FAST, "--lr", "-1"),
                 "--lr")
    assert tree_fingerprint(run) == before
    # A failure found later (a split file naming a missing image): the old run is still there afterwards.
    split_file = tmp_path / "split.csv"
    split_file.write_text(f"path,label,split\n{tmp_path / 'gone.png'},COVID,train\n")
    assert_error(cli(server, "train", data, "--out", run, "--overwrite", "--epochs", "1", *FAST,
                     "--split-file", split_file), "gone.png")
    assert tree_fingerprint(run) == before


# --------------------------------------------------------------- 4. outputs inside an input folder


@pytest.mark.parametrize("command", ["train", "predict"])  # explain and evaluate already refuse
def test_4_output_inside_an_input_folder_is_refused(server, data, finished_run, tmp_path, command):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    before = tree_fingerprint(copy)
    inside = copy / "COVID"
    model = finished_run / "model.keras"
    argv = {
        "train": ["train", copy, "--out", inside / "run", "--epochs", "1", *FAST],
        "predict": ["predict", model, inside, "--out", inside / "images" / "pred.csv"],
    }[command]
    assert_error(cli(server, *argv), "inside")
    assert tree_fingerprint(copy) == before


# ---------------------------------------------------------------------------- 5. patient-id leakage


def test_5_split_file_without_patients_still_checks_the_datasets_patient_ids(server, tmp_path):
    root = make_class_folders(tmp_path / "data", {"COVID": 6, "Normal": 6}, size=32)
    # File stems unique over the classes: a stem shared by two classes would be a (false) leak of its own.
    paths = sorted(p.rename(p.with_name(f"{p.parent.name}_{p.name}")) for p in sorted(root.rglob("*.png")))
    patients = {p: f"{p.parent.name}-{p.stem}" for p in paths}
    shared = [root / "COVID" / "COVID_img_0.png", root / "COVID" / "COVID_img_1.png"]
    for path in shared:
        patients[path] = "P7"  # one patient, two images
    rows = [f"{p.relative_to(root)},{p.parent.name},{patients[p]}" for p in paths]
    (root / "metadata.csv").write_text("path,label,patient_id\n" + "\n".join(rows) + "\n")
    splits = ["train", "train", "train", "val", "test", "train"]
    table = [f"{p},{p.parent.name},{splits[int(p.stem[-1])]}" for p in paths]
    table = [line if Path(line.split(",")[0]) != shared[1] else f"{shared[1]},COVID,test" for line in table]
    split_file = tmp_path / "split.csv"
    split_file.write_text("path,label,split\n" + "\n".join(table) + "\n")
    out = tmp_path / "run"
    child = cli(server, "train", root, "--out", out, "--split-file", split_file, "--epochs", "1", *FAST)
    assert_error(child, "--allow-leakage", str(shared[0]), str(shared[1]))
    assert not out.exists()


# ---------------------------------------------------------------------- 6. a class without images


def test_6_split_file_with_one_class_only_is_refused(server, data, tmp_path):
    covid = sorted((data / "COVID" / "images").glob("*.png"))
    splits = ["train"] * 4 + ["val"] * 2 + ["test"] * 2
    split_file = tmp_path / "split.csv"
    split_file.write_text("path,label,split\n" + "".join(f"{p},COVID,{s}\n" for p, s in zip(covid, splits)))
    out = tmp_path / "run"
    assert_error(cli(server, "train", data, "--out", out, "--split-file", split_file, "--epochs", "1", *FAST),
                 "Normal")
    assert not out.exists()


def test_6_a_named_class_without_readable_images_is_refused(server, tmp_path):
    root = make_class_folders(tmp_path / "data", {"COVID": 6, "Normal": 6}, size=32)
    (root / "Broken").mkdir()
    for index in range(3):
        (root / "Broken" / f"scan_{index}.png").write_text("not a PNG\n")
    out = tmp_path / "run"
    child = cli(server, "train", root, "--out", out, "--classes", "COVID,Normal,Broken", "--epochs", "1", *FAST)
    assert_error(child, "Broken")
    assert not out.exists()


# ----------------------------------------------------------------------------------- 7. CSV layouts


def _label_csv(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    root = make_class_folders(tmp_path / "data", {"COVID": 3, "Normal": 3}, size=32)
    (root / "labels.csv").write_text("path,label\n" + "".join(f"{path},{label}\n" for path, label in rows))
    return root


BASE_ROWS = [("COVID/img_0.png", "COVID"), ("COVID/img_1.png", "COVID"), ("Normal/img_0.png", "Normal"),
             ("Normal/img_1.png", "Normal")]  # rows 2-5 of the file (row 1 is the header)


def test_7_empty_label_is_refused_by_row(server, tmp_path):
    root = _label_csv(tmp_path, [*BASE_ROWS, ("COVID/img_2.png", "")])
    assert_error(cli(server, "inspect", root), "row 6", "label")


def test_7_one_path_with_two_labels_is_refused_by_row(server, tmp_path):
    root = _label_csv(tmp_path, [*BASE_ROWS, ("COVID/img_0.png", "Normal")])
    assert_error(cli(server, "inspect", root), "row 2", "row 6")


def test_7_duplicate_path_is_counted_once_and_reported(server, tmp_path):
    root = _label_csv(tmp_path, [*BASE_ROWS, ("COVID/img_0.png", "COVID")])
    child = cli(server, "inspect", root, "--json")
    assert child.code in (0, 1), child.stderr
    assert json.loads(child.stdout)["n_images"] == 4
    assert "row 2" in child.stderr and "row 6" in child.stderr, child.stderr


def test_7_unknown_label_is_reported_by_row(server, tmp_path):
    root = _label_csv(tmp_path, [*BASE_ROWS, ("COVID/img_2.png", "Alien")])
    child = cli(server, "inspect", root)
    text = child.stdout + child.stderr
    assert re.search(r"row 6\b.*Alien|Alien.*row 6\b", text), text


# ------------------------------------------------------------------------- 8. options silently bent


def test_8_split_fractions_that_do_not_add_up_are_refused(server, data, tmp_path):
    out = tmp_path / "run"
    assert_error(cli(server, "train", data, "--out", out, "--split", "0.5,0.5,0.5", "--epochs", "1", *FAST),
                 "--split")
    assert not out.exists()


def test_8_negative_patience_is_refused(server, data, tmp_path):
    out = tmp_path / "run"
    child = cli(server, "train", data, "--out", out, "--epochs", "1", *FAST, "--patience", "-3")
    assert_error(child, "--patience")
    assert not out.exists()


def test_8_unknown_split_name_in_a_split_file_is_refused(server, data, tmp_path):
    images = sorted(data.rglob("images/*.png"))
    names = ["train", "train", "train", "val", "test", "holdout", "train", "val"]
    split_file = tmp_path / "split.csv"
    split_file.write_text("path,label,split\n" + "".join(
        f"{p},{p.parent.parent.name},{names[i % len(names)]}\n" for i, p in enumerate(images)))
    out = tmp_path / "run"
    assert_error(cli(server, "train", data, "--out", out, "--split-file", split_file, "--epochs", "1", *FAST),
                 "holdout")
    assert not out.exists()


# -------------------------------------------------------------------------- 9. outputs that cannot be written


@pytest.fixture
def blocker(tmp_path) -> Path:
    """A regular file: any --out below it fails with ENOTDIR, also for root (chmod does not stop root)."""
    path = tmp_path / "a_file"
    path.write_text("not a folder\n")
    return path


def _writing_commands(data: Path, run: Path, tmp_path: Path, out: Path) -> dict[str, list]:
    dicom_dir = tmp_path / "dicom"
    write_dicom(dicom_dir / "slice.dcm", np.arange(256).reshape(16, 16) * 4)
    predictions = tmp_path / "predictions.csv"
    predictions.write_text("path,predicted,prob_COVID,prob_Normal\nP1/a.png,COVID,0.9,0.1\n")
    image_dir = data / "COVID" / "images"
    model = run / "model.keras"
    return {
        "train": ["train", data, "--out", out / "run", "--epochs", "1", *FAST],
        "predict": ["predict", model, image_dir, "--out", out / "pred.csv"],
        "evaluate": ["evaluate", model, data, "--out", out / "eval", "--n-bootstrap", "0"],
        "explain": ["explain", model, image_dir, "--out", out / "explained"],
        "report": ["report", run, "--out", out / "report.html"],
        "dicom2png": ["dicom2png", dicom_dir, "--out", out / "png", "--no-progress"],
        "ct-vote": ["ct-vote", predictions, "--out", out / "patients.csv"],
        "synth": ["synth", "--out", out / "synth", "--per-class", "2", "--size", "32"],
        "synth-ct": ["synth-ct", "--out", out / "ct"],
    }


@pytest.mark.parametrize("command", ["train", "predict", "evaluate", "explain", "report", "dicom2png", "ct-vote",
                                     "synth", "synth-ct"])
def test_9_out_that_cannot_be_written_is_one_error_line(server, data, finished_run, tmp_path, blocker, command):
    argv = _writing_commands(data, finished_run, tmp_path, blocker)[command]
    assert_error(cli(server, *argv), str(blocker))


@pytest.mark.skipif(ROOT, reason="root writes into a chmod 555 folder anyway; the ENOTDIR test covers root")
@pytest.mark.parametrize("command", ["train", "predict", "evaluate", "explain", "report", "dicom2png", "ct-vote",
                                     "synth", "synth-ct"])
def test_9_read_only_out_is_one_error_line(server, data, finished_run, tmp_path, command):
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        argv = _writing_commands(data, finished_run, tmp_path, read_only)[command]
        assert_error(cli(server, *argv), str(read_only))
    finally:
        read_only.chmod(0o755)


def test_9_train_out_naming_a_file_and_predict_out_under_a_file(server, data, finished_run, blocker):
    before = blocker.read_bytes()
    assert_error(cli(server, "train", data, "--out", blocker, "--epochs", "1", *FAST), str(blocker))
    assert blocker.read_bytes() == before
    assert_error(cli(server, "predict", finished_run / "model.keras", data / "COVID" / "images",
                     "--out", blocker / "pred.csv"), str(blocker))


# ------------------------------------------------------------------------- 10. nothing readable at all


@pytest.fixture(params=["header_only_csv", "all_unreadable"])
def nothing_readable(request, tmp_path) -> Path:
    root = tmp_path / "data"
    if request.param == "header_only_csv":
        root.mkdir()
        (root / "labels.csv").write_text("path,label\n")
    else:
        for name in ("COVID", "Normal"):
            (root / name).mkdir(parents=True)
            (root / name / "scan.png").write_text("not a PNG\n")
            (root / name / "empty.png").write_bytes(b"")
    return root


@pytest.mark.parametrize("command", ["inspect", "train", "evaluate"])
def test_10_no_readable_image_is_one_error_line(server, finished_run, nothing_readable, tmp_path, command):
    argv = {
        "inspect": ["inspect", nothing_readable],
        "train": ["train", nothing_readable, "--out", tmp_path / "run", "--epochs", "1", *FAST],
        "evaluate": ["evaluate", finished_run / "model.keras", nothing_readable, "--out", tmp_path / "eval"],
    }[command]
    assert_error(cli(server, *argv), str(nothing_readable))


@pytest.mark.skipif(ROOT, reason="root reads a chmod 000 folder anyway")
def test_10_unreadable_class_folder_is_reported_not_a_traceback(server, tmp_path):
    root = make_class_folders(tmp_path / "data", {"COVID": 4, "Normal": 4, "Locked": 2}, size=32)
    (root / "Locked").chmod(0)
    try:
        child = cli(server, "inspect", root)
        assert child.code in (0, 1, 2) and str(root / "Locked") in child.stdout + child.stderr
    finally:
        (root / "Locked").chmod(0o755)


# ------------------------------------------------------------------- 11. argument errors after the run starts


@pytest.mark.parametrize("option", [["--lr", "-1"], ["--lr", "nan"], ["--image-size", "3"]],
                         ids=["lr-negative", "lr-nan", "image-size-3"])
def test_11_bad_numbers_are_refused_before_the_run_folder_exists(server, data, tmp_path, option):
    out = tmp_path / "run"
    argv = ["train", data, "--out", out, "--epochs", "1", *FAST]
    argv[argv.index("--image-size") + 1] = "32" if option[0] != "--image-size" else option[1]
    if option[0] == "--lr":
        argv += option
    assert_error(cli(server, *argv), option[0])
    assert not out.exists()


# ---------------------------------------------------------------------- 12. Lambda with a named function

LAMBDA_SCRIPT = '''
import sys
import keras

def scale(tensor):
    return tensor * 2.0 - 1.0

inputs = keras.Input((32, 32, 1))
x = keras.layers.Lambda(scale, name="named_function")(inputs)
x = keras.layers.GlobalAveragePooling2D()(x)
keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x)).save(sys.argv[1])
'''


def test_12_lambda_calling_a_named_function_is_the_one_line_refusal(server, data, tmp_path):
    script = tmp_path / "save_lambda.py"
    script.write_text(LAMBDA_SCRIPT)
    model = tmp_path / "named.keras"
    saved = server.run([model], script=script)
    assert saved.code == 0 and model.is_file(), saved.stderr[-3000:]
    child = cli(server, "predict", model, data / "COVID" / "images", "--out", tmp_path / "pred.csv")
    assert_error(child, "Lambda", "--allow-unsafe", str(model))


# --------------------------------------------------------------------------- 13. report embeds what it should


def test_13_report_embeds_only_real_images_inside_the_run(server, finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run, symlinks=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-OUTSIDE-THE-RUN\n")
    figures = run / "figures"
    os.symlink(secret, figures / "leak.png")
    os.symlink("/etc/passwd", figures / "passwd.png")
    (figures / "fake.png").write_text("SECRET-NOT-AN-IMAGE\n")
    real = sorted(p.name for p in figures.glob("*.png") if not p.is_symlink() and p.name != "fake.png")
    assert real, "the finished run has no figures"
    out = tmp_path / "report.html"
    child = cli(server, "report", run, "--out", out)
    assert child.code == 0, child.stderr
    page = out.read_text()
    embedded = [base64.b64decode(data) for data in re.findall(r"base64,([A-Za-z0-9+/=]+)", page)]
    assert all(blob.startswith(b"\x89PNG\r\n\x1a\n") for blob in embedded)
    assert not any(b"SECRET" in blob or b"root:" in blob for blob in embedded)
    for name in ("leak.png", "passwd.png", "fake.png"):
        assert f"figures/{name}</figcaption>" not in page, name
    assert sum(f"figures/{name}</figcaption>" in page for name in real) == len(real)


# ---------------------------------------------------------------------------------- 14. zip bomb model


def test_14_model_archive_with_a_huge_declared_entry_is_refused_without_reading_it(server, data, finished_run,
                                                                                  tmp_path):
    bomb = tmp_path / "bomb.keras"
    zeros = bytes(16 << 20)
    with zipfile.ZipFile(finished_run / "model.keras") as source, \
            zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as target:
        for item in source.infolist():
            if not item.filename.endswith(".h5"):
                target.writestr(item, source.read(item))
        with target.open("model.weights.h5", "w", force_zip64=True) as handle:
            for _ in range(96):  # 1.5 GiB of zeros, about 1.5 MB compressed
                handle.write(zeros)
    assert bomb.stat().st_size < 20 << 20
    child = cli(server, "predict", bomb, data / "COVID" / "images", "--out", tmp_path / "pred.csv")
    assert_error(child, str(bomb))
    grown_mib = (child.maxrss_kb - server.maxrss_kb) / 1024
    assert grown_mib < 768, f"the refusal took {grown_mib:.0f} MiB more than an idle interpreter"


# --------------------------------------------------------------------------------------- 15. ct-vote


@pytest.mark.parametrize("value", ["1.7", "-0.5", "inf"])
def test_15_probability_out_of_range_is_refused_by_row(server, tmp_path, value):
    predictions = tmp_path / "predictions.csv"
    predictions.write_text("path,predicted,prob_COVID,prob_Normal\n"
                           "P1/a.png,COVID,0.9,0.1\n"
                           f"P1/b.png,COVID,{value},0.2\n")
    out = tmp_path / "patients.csv"
    assert_error(cli(server, "ct-vote", predictions, "--out", out), "prob_COVID", "row")
    assert not out.exists()


def test_15_duplicate_slices_are_reported_and_not_counted_twice(server, tmp_path):
    predictions = tmp_path / "predictions.csv"
    rows = ["P1/s1.png,COVID,0.9,0.1", "P1/s2.png,COVID,0.8,0.2", *["P1/s3.png,Normal,0.3,0.7"] * 3]
    predictions.write_text("path,predicted,prob_COVID,prob_Normal\n" + "\n".join(rows) + "\n")
    out = tmp_path / "patients.csv"
    child = cli(server, "ct-vote", predictions, "--out", out)
    if child.code == 2:
        assert_error(child, "P1/s3.png")
    else:
        assert child.code == 0, child.stderr
        assert "P1/s3.png" in child.stdout + child.stderr and "duplicate" in (child.stdout + child.stderr).lower()
        patients = pd.read_csv(out)
        assert patients["predicted"].tolist() == ["COVID"] and patients["num_slices"].tolist() == [3]


# -------------------------------------------------------------------------------- 16. no mask matched


def test_16_explain_with_masks_that_match_nothing_warns_and_prints_no_nan(server, data, finished_run, tmp_path):
    masks = tmp_path / "masks"
    for index in range(2):
        write_png(masks / f"unrelated_{index}.png", np.full((32, 32), 255, dtype=np.uint8))
    images = data / "COVID" / "images"
    child = cli(server, "explain", finished_run / "model.keras", images, "--out", tmp_path / "explained",
                "--masks", masks)
    assert child.code == 0, child.stderr
    assert "nan" not in child.stdout.lower(), child.stdout
    assert re.search(r"warning: .*no mask", child.stderr, re.IGNORECASE), child.stderr


# ------------------------------------------------------------------------- 17. nothing to work on


@pytest.mark.parametrize("content", ["empty", "stray_file"])
def test_17_report_on_a_folder_that_is_not_a_run_is_refused(server, tmp_path, content):
    folder = tmp_path / "not_a_run"
    folder.mkdir()
    if content == "stray_file":
        (folder / "notes.txt").write_text("hello\n")
    out = tmp_path / "report.html"
    assert_error(cli(server, "report", folder, "--out", out), str(folder))
    assert not out.exists()


def test_17_dicom2png_on_an_empty_folder_warns(server, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    child = cli(server, "dicom2png", empty, "--out", tmp_path / "png", "--no-progress")
    assert child.code == 0, child.stderr
    assert re.search(r"warning: .*no DICOM", child.stderr, re.IGNORECASE), child.stderr

"""Every command on a corpus of hostile inputs (``tests/hostile.py``): no traceback, one clear message each.

Exit codes (``covid_tf/cli.py``): 0 success (skipped files are reported, not fatal); 1 problems found
and reported (e.g. ``inspect --strict`` with skipped files); 2 a usage or input error, printed as one
``error:`` line; 130 interrupted. After every command the input folders are byte-for-byte unchanged.

The corpus holds a 10000x10000 PNG, which every command that reads the images decodes (a few
seconds each), so the corpus and the trained model are built once per module.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from covid_tf.cli import COMMANDS, main
from tests.helpers import make_class_folders
from tests.hostile import Corpus, build_hostile_corpus, tree_fingerprint

TRACEBACK = "Traceback (most recent call last)"
TRAIN_OPTIONS = ["--epochs", "1", "--image-size", "32", "--batch-size", "8", "--quiet"]
# Wide val and test splits: a dozen images per class must still give every class images in all three.
WIDE_SPLIT = ["--split", "0.5,0.25,0.25"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    built = build_hostile_corpus(tmp_path_factory.mktemp("hostile"))
    built.fingerprint = tree_fingerprint(built.root)  # type: ignore[attr-defined]
    return built


def assert_untouched(corpus: Corpus) -> None:
    """The listing and every file's sha256 of the input folders are as they were built."""
    assert tree_fingerprint(corpus.root) == corpus.fingerprint  # type: ignore[attr-defined]


def run_cli(argv: list[str], capfd) -> tuple[int, str, str]:
    """``covid_tf.cli.main(argv)`` with stdout/stderr captured at the file-descriptor level (TF's C++ too)."""
    capfd.readouterr()
    code = main(argv)
    captured = capfd.readouterr()
    assert TRACEBACK not in captured.err and TRACEBACK not in captured.out, captured.err[-3000:]
    return code, captured.out, captured.err


def require_command(name: str) -> None:
    if name not in COMMANDS:
        pytest.skip(f"the {name!r} command is not registered yet")


@pytest.fixture(scope="module")
def trained_run(corpus: Corpus, tmp_path_factory) -> dict:
    """Train 1 epoch at 32 px on the hostile X-ray folder (the good and odd-but-readable images)."""
    out = tmp_path_factory.mktemp("hostile_run") / "run"
    # capfd is function-scoped: capture what the command prints (Python level) ourselves.
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["train", str(corpus.xray), "--out", str(out), *TRAIN_OPTIONS, *WIDE_SPLIT])
    return {"code": code, "out": stdout.getvalue(), "err": stderr.getvalue(), "run": out}


# ------------------------------------------------------------------------------------------------ inspect


def test_inspect_names_every_bad_file_with_a_reason(corpus, capfd):
    code, out, err = run_cli(["inspect", str(corpus.xray), "--json"], capfd)
    assert code == 0
    summary = json.loads(out)
    reasons = {item["path"]: item["reason"] for item in summary["skipped"]}
    for item, path in corpus.bad.items():
        assert str(path) in reasons, f"{item} ({path}) not reported"
        assert reasons[str(path)].strip(), f"{item} reported without a reason"
    assert "truncated" in reasons[str(corpus.bad["truncated_png"])]
    assert "empty" in reasons[str(corpus.bad["zero_bytes"])]
    assert "not an image" in reasons[str(corpus.bad["text_as_png"])]
    assert "symbolic links" in reasons[str(corpus.bad["symlink_loop"])]
    if corpus.unreadable is not None:
        assert "permission" in reasons[str(corpus.unreadable)]
    # Odd but valid files are read, not skipped; the good images are all there; the empty folder is no class.
    assert not set(map(str, corpus.odd_but_readable.values())) & set(reasons)
    assert summary["n_images"] == len(corpus.good) + len(corpus.odd_but_readable)
    assert set(summary["classes"]) == {"COVID", "Normal"}
    assert {"1x1", "10000x10000"} <= set(summary["sizes"])
    assert {"I;16", "P", "CMYK"} <= set(summary["modes"])
    # The folder link back to xray/ is not walked into (else every image would appear twice).
    assert not any("/cycle/" in path for path in reasons)
    assert_untouched(corpus)


def test_inspect_strict_exits_1_and_label_csv_names_missing_files(corpus, capfd):
    code, out, _ = run_cli(["inspect", str(corpus.csv), "--strict"], capfd)
    assert code == 1  # the command ran but found problems, which it reported
    for missing in corpus.missing_in_csv:
        assert f"{missing}: listed in labels.csv but missing" in out
    assert_untouched(corpus)


# -------------------------------------------------------------------------------------------------- train


@pytest.mark.slow
def test_train_uses_the_readable_images_and_reports_the_skipped(corpus, trained_run):
    assert trained_run["code"] == 0, trained_run["err"][-3000:]
    assert TRACEBACK not in trained_run["err"]
    run = trained_run["run"]
    for name in ("model.keras", "metrics.json", "split.csv", "history.csv", "skipped.csv"):
        assert (run / name).is_file(), name
    used = set(pd.read_csv(run / "split.csv")["path"])
    assert set(map(str, corpus.good)) <= used
    assert set(map(str, corpus.odd_but_readable.values())) <= used
    assert not set(map(str, corpus.bad.values())) & used
    skipped = pd.read_csv(run / "skipped.csv")
    empty_class = str(corpus.root / "xray" / "Empty")
    assert set(skipped["path"]) == {*map(str, corpus.bad.values()), empty_class}
    assert "no image files" in skipped.set_index("path").loc[empty_class, "reason"]
    assert f"skipped {len(corpus.bad) + 1} file(s)" in trained_run["out"]
    assert_untouched(corpus)


def test_train_single_class_is_one_error_line(corpus, capfd, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli(["train", str(corpus.single), "--out", str(out), *TRAIN_OPTIONS], capfd)
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "at least two classes" in errors[0] and str(corpus.single) in errors[0]
    assert not out.exists()
    assert_untouched(corpus)


def test_subprocess_inspect_strict_exit_1_without_traceback(corpus):
    """Through ``python -m covid_tf`` (a fresh interpreter): the exit code and no traceback on stderr."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}
    result = subprocess.run([sys.executable, "-m", "covid_tf", "inspect", str(corpus.csv), "--strict"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1, result.stderr
    assert TRACEBACK not in result.stderr
    assert "listed in labels.csv but missing" in result.stdout
    missing = subprocess.run([sys.executable, "-m", "covid_tf", "inspect", str(corpus.root / "nowhere")],
                             capture_output=True, text=True, env=env, timeout=300)
    assert missing.returncode == 2 and TRACEBACK not in missing.stderr
    assert missing.stderr.strip().splitlines() == [f"error: {corpus.root / 'nowhere'}: no such folder"]
    assert_untouched(corpus)


def test_train_bad_options_and_missing_data_exit_2(corpus, capfd, tmp_path):
    code, _, err = run_cli(["train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"), *TRAIN_OPTIONS],
                           capfd)
    assert code == 2 and err.count("error:") == 1 and "no such folder" in err
    code, _, err = run_cli(["train", str(corpus.xray), "--out", str(tmp_path / "run"), "--epochs", "0"], capfd)
    assert code == 2 and "--epochs must be at least 1" in err
    code, _, err = run_cli(["train", str(corpus.xray), "--out", str(tmp_path / "run"), "--devices", "/cpu:0"], capfd)
    assert code == 2 and "--devices needs --strategy mirrored" in err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------- dicom2png


def test_dicom2png_skips_and_reports_the_file_without_pixel_data(corpus, capfd, tmp_path):
    code, out, _ = run_cli(["dicom2png", str(corpus.dicom), "--out", str(tmp_path / "png"), "--no-progress"], capfd)
    assert code == 0
    assert "converted 1 slices" in out and "skipped 2 files" in out
    assert f"{corpus.dicom_no_pixels}: no pixel data" in out
    assert f"{corpus.dicom_not_dicom}: not a DICOM file" in out
    skipped = pd.read_csv(tmp_path / "png" / "skipped.csv")
    assert set(skipped["path"]) == {str(corpus.dicom_no_pixels), str(corpus.dicom_not_dicom)}
    assert_untouched(corpus)


def test_dicom2png_on_the_xray_folder_passes_over_images_and_loops(corpus, capfd, tmp_path):
    code, out, _ = run_cli(["dicom2png", str(corpus.xray), "--out", str(tmp_path / "png"), "--no-progress"], capfd)
    assert code == 0
    assert "converted 0 slices" in out and "no pixel data" in out
    assert_untouched(corpus)


# ------------------------------------------------------------------------- evaluate / predict / explain


@pytest.mark.slow
def test_evaluate_on_the_hostile_folder(corpus, trained_run, capfd, tmp_path):
    require_command("evaluate")
    assert trained_run["code"] == 0
    model = trained_run["run"] / "model.keras"
    code, out, err = run_cli(["evaluate", str(model), str(corpus.xray), "--out", str(tmp_path / "eval"),
                              "--n-bootstrap", "10"], capfd)
    assert code == 0, err
    for path in corpus.bad.values():
        assert str(path) in out + err, f"{path} not named"
    assert_untouched(corpus)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["predict", "explain"])
def test_predict_and_explain_on_the_hostile_folder(corpus, trained_run, capfd, tmp_path, command):
    require_command(command)
    assert trained_run["code"] == 0
    model = trained_run["run"] / "model.keras"
    out_path = tmp_path / ("predictions.csv" if command == "predict" else "explained")
    # A folder with bad and odd files, plus a missing path named on the command line.
    inputs = [str(corpus.xray / "COVID"), str(corpus.xray / "Normal" / "not an image.png"), str(tmp_path / "gone.png")]
    try:
        code, out, err = run_cli([command, str(model), *inputs, "--out", str(out_path)], capfd)
    except SystemExit as error:  # the command's options changed: this test needs adapting, not hiding
        pytest.fail(f"{command} rejected the arguments (exit {error.code}): {capfd.readouterr().err}")
    assert code == 0, err
    text = out + err
    for name in ("truncated_png", "truncated_jpeg", "zero_bytes", "symlink_loop", "text_as_png"):
        assert str(corpus.bad[name]) in text, f"{command}: {name} not named"
    assert str(tmp_path / "gone.png") in text
    assert out_path.exists()
    assert_untouched(corpus)


# ------------------------------------------------------------------------------------ leaky user splits


@pytest.fixture
def leaky_data(tmp_path) -> tuple[Path, list[Path], Path]:
    """6 + 6 distinct images, plus a near-identical copy of the first COVID image (one pixel changed)."""
    root = make_class_folders(tmp_path / "data", {"COVID": 6, "Normal": 6}, size=32)
    paths = sorted((root / "COVID").glob("*.png")) + sorted((root / "Normal").glob("*.png"))
    original = np.asarray(Image.open(paths[0])).copy()
    original[0, 0] = original[0, 0] ^ 1
    copy = root / "COVID" / "copy of img_0.png"
    Image.fromarray(original).save(copy)
    return root, paths, copy


def _split_file(path: Path, rows: list[tuple[Path, str, str, str]]) -> Path:
    table = pd.DataFrame([(str(p), label, split, patient) for p, label, split, patient in rows],
                         columns=["path", "label", "split", "patient_id"])
    table.to_csv(path, index=False)
    return path


def _clean_rows(paths: list[Path]) -> list[tuple[Path, str, str, str]]:
    splits = ["train", "train", "train", "val", "test", "train"]
    return [(p, p.parent.name, splits[i % 6], f"{p.parent.name}-{i}") for i, p in enumerate(paths)]


@pytest.mark.parametrize("kind", ["patient", "near_duplicate"])
def test_leaky_split_file_is_refused_naming_the_files(leaky_data, tmp_path, capfd, kind):
    root, paths, copy = leaky_data
    before = tree_fingerprint(root)
    rows = _clean_rows(paths)
    if kind == "patient":  # two images of one patient: one in train, one in val
        rows[0] = (paths[0], "COVID", "train", "P7")
        rows[3] = (paths[3], "COVID", "val", "P7")
        named = {paths[0], paths[3]}
    else:  # a near-identical copy of a training image in test
        rows.append((copy, "COVID", "test", "copy-patient"))
        named = {paths[0], copy}
    split_file = _split_file(tmp_path / "split.csv", rows)
    out = tmp_path / "run"
    argv = ["train", str(root), "--out", str(out), "--split-file", str(split_file), *TRAIN_OPTIONS]
    code, _, err = run_cli(argv, capfd)
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--allow-leakage" in errors[0]
    for path in named:
        assert str(path) in errors[0], f"{path} not named in {errors[0]}"
    assert not out.exists()
    if kind == "patient":  # the opt-in trains anyway (once is enough: the refusal is the same code path)
        code, _, err = run_cli([*argv, "--allow-leakage"], capfd)
        assert code == 0, err
        assert (out / "model.keras").is_file()
    assert tree_fingerprint(root) == before


def test_clean_split_file_with_a_copy_left_out_is_accepted(leaky_data, tmp_path):
    """The copy is not in the split file (split ''), so it is not a leak; prepare_split accepts the split."""
    from covid_tf.runs.config import TrainConfig
    from covid_tf.workflows.train import prepare_split

    root, paths, _ = leaky_data
    split_file = _split_file(tmp_path / "split.csv", _clean_rows(paths))
    split, names = prepare_split(TrainConfig(data=str(root), split_file=str(split_file)))
    assert names == ["COVID", "Normal"]
    assert set(split[split["split"] != ""]["path"]) == {str(p.resolve()) for p in paths}

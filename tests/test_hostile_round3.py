"""Hostile inputs, round 3: one test per case, the commands driven in real processes as in round 2.

1. an ``--out`` that would write over a file the command reads (a model's run folder is an input too);
2. image and batch sizes no machine can use, refused before any work;
3. CSV injection: formula-like cells in every CSV covid_tf writes, read back losslessly;
4. images beside a ``metadata.csv`` index that it does not list;
5. newcomer fixes: messages, packaging metadata, progress bars in notebooks.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import make_class_folders, write_png
from tests.hostile import tree_fingerprint
from tests.test_hostile_round2 import FAST, assert_error, cli

ROOT = Path(__file__).resolve().parent.parent
FORMULA = "=cmd|' /C calc'!A0"  # the classic CSV-injection payload, as a class label
CLASSES = (FORMULA, "Normal")
UNLISTED = "extra/not_in_the_index.png"


def _image(seed: int) -> np.ndarray:
    """A distinct 32 px image (random 8x8 blocks: no two are near-duplicates)."""
    blocks = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    return np.kron(blocks, np.ones((4, 4), dtype=np.uint8))


@pytest.fixture(scope="module")
def formula_data(tmp_path_factory) -> Path:
    """A ``metadata.csv`` dataset whose labels and patient folders start like formulas (``=``, ``@``, ``+``),
    plus one image the index does not list."""
    root = tmp_path_factory.mktemp("formula") / "data"
    rows = []
    for index in range(16):
        label = CLASSES[index % 2]
        patient = f"@p{index}" if label == FORMULA else f"+q{index}"
        relative = f"{patient}/img_{index}.png"
        write_png(root / relative, _image(index))
        rows.append({"path": relative, "label": label, "patient_id": patient})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    write_png(root / UNLISTED, _image(99))
    return root


@pytest.fixture(scope="module")
def formula_run(server, formula_data, tmp_path_factory):
    """A one-epoch run on ``formula_data`` (the child, for its output, and the run folder)."""
    run = tmp_path_factory.mktemp("formula_run") / "run"
    child = cli(server, "train", formula_data, "--out", run, "--epochs", "1", *FAST)
    assert child.code == 0, child.stderr[-3000:]
    return child, run


def formula_cells(path: Path) -> list[str]:
    """Cells of a CSV file that a spreadsheet would run as formulas (a number such as -0.5 is none)."""
    with path.open(newline="", encoding="utf-8") as handle:
        cells = [cell for row in csv.reader(handle) for cell in row]
    number = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^-?inf$")
    return [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r") and not number.match(cell)]


# ------------------------------------------------------------------ 1. no command writes over what it reads


def test_1_out_over_a_file_of_the_models_run_folder_is_refused(server, formula_run, formula_data, tmp_path):
    _, finished = formula_run
    run = tmp_path / "run"
    shutil.copytree(finished, run, symlinks=True)
    model, images = run / "model.keras", formula_data / "@p0"
    predictions = run / "eval" / "predictions.csv"
    predictions.parent.mkdir()
    predictions.write_text(f"path,predicted,prob_{FORMULA},prob_Normal\n{images / 'img_0.png'},Normal,0.2,0.8\n")
    (run / "eval" / "metrics.json").write_text("{}\n")  # an evaluate folder's files
    before = tree_fingerprint(run)
    for argv, word in (
        (["predict", model, images, "--out", run / "config.json", "--overwrite"], "config.json"),
        (["report", run, "--out", run / "metrics.json", "--overwrite"], "metrics.json"),
        (["explain", model, images, "--out", run], str(run)),
        (["ct-vote", predictions, "--out", run / "eval" / "metrics.json"], "metrics.json"),
        (["segment", images, "--segmenter", model, "--out", run], str(run)),
    ):
        assert_error(cli(server, *argv), word)
        assert tree_fingerprint(run) == before, f"{argv[0]} changed the run folder"
    # A new file beside the run's files stays allowed (README: evaluate --out runs/baseline/eval).
    child = cli(server, "predict", model, images, "--out", run / "new_predictions.csv")
    assert child.code == 0, child.stderr[-2000:]


# ---------------------------------------------------------------------- 2. sizes refused before any work


def test_2_sizes_no_machine_can_use_are_refused_before_any_work(server, formula_run, formula_data, tmp_path):
    _, run = formula_run
    model, images, out = run / "model.keras", formula_data / "@p0", tmp_path / "out"
    for argv, words in (
        (["predict", model, images, "--out", out / "p.csv", "--batch-size", "100000"], ["--batch-size"]),
        (["explain", model, images, "--out", out, "--batch-size", "100000"], ["--batch-size"]),
        (["evaluate", model, formula_data, "--out", out, "--batch-size", "100000"], ["--batch-size"]),
        (["segment", images, "--out", out, "--size", "50000"], ["--size", "COVID_TF_MAX_IMAGE_SIZE"]),
        (["segment-train", formula_data, "--out", out, "--image-size", "50000"], ["--image-size"]),
        (["audit", formula_data, "--out", out, "--image-size", "50000"], ["--image-size"]),
        (["train", formula_data, "--out", out, "--model", "small", "--image-size", "1024", "--batch-size", "512"],
         ["--batch-size", "--image-size"]),
        (["train", formula_data, "--out", out, "--model", "small", "--image-size", "50000"],
         ["--image-size", "1024", "COVID_TF_MAX_IMAGE_SIZE"]),
    ):
        assert_error(cli(server, *argv, timeout=60), *words)
        assert not out.exists(), f"{argv[0]} wrote {out} before refusing"


# ------------------------------------------------------------------------------------- 3. CSV injection


def test_3_formula_cells_are_neutralised_in_every_csv_and_read_back(server, formula_run, formula_data, tmp_path):
    _, run = formula_run
    written = sorted(run.rglob("*.csv"))
    assert {"split.csv", "history.csv"} <= {path.name for path in written}
    predictions = tmp_path / "predictions.csv"
    assert cli(server, "predict", run / "model.keras", formula_data, "--out", predictions).code == 0
    explained = tmp_path / "explained"
    assert cli(server, "explain", run / "model.keras", formula_data / "@p0", "--out", explained).code == 0
    patients = tmp_path / "patients.csv"
    assert cli(server, "ct-vote", predictions, "--out", patients).code == 0
    for path in [*written, predictions, explained / "explanations.csv", patients]:
        assert formula_cells(path) == [], f"{path.name} holds formula cells"
    split = pd.read_csv(run / "split.csv", dtype=str, keep_default_na=False)
    assert f"'{FORMULA}" in set(split["label"]) and "'@p0" in set(split["patient_id"])
    # Read back by covid_tf: the original values, losslessly.
    from covid_tf.data.splits import load_split
    from covid_tf.evaluation.tables import load_predictions

    assert set(load_split(run / "split.csv")["label"]) == set(CLASSES)
    assert set(load_predictions(predictions)["predicted"]) <= set(CLASSES)
    voted = load_predictions(patients)
    assert set(voted["predicted"]) <= set(CLASSES) and "@p0" in set(voted["patient_id"])
    # The split file of the run is a valid --split-file again: same labels, same patients.
    child = cli(server, "evaluate", run / "model.keras", formula_data, "--split-file", run / "split.csv",
                "--out", tmp_path / "eval")
    assert child.code == 0, child.stderr[-2000:]


def test_3_neutralise_keeps_numbers_and_round_trips_quotes():
    from covid_tf.io_utils import csv_text, restore_formulas

    cells = [FORMULA, "+1 phone", "@SUM(A1)", "\tx", "-x", "-", "'=already", "''@twice", "plain", "-0.5", "1e-3", ""]
    table = pd.DataFrame({"text": cells, "number": np.linspace(-1, 1, len(cells))})
    text = csv_text(table)
    read = pd.read_csv(__import__("io").StringIO(text), dtype=str, keep_default_na=False)
    assert read["text"].tolist()[:5] == [f"'{FORMULA}", "'+1 phone", "'@SUM(A1)", "'\tx", "'-x"]
    assert read["text"].tolist()[9:11] == ["-0.5", "1e-3"]  # numbers stay numbers
    assert restore_formulas(read)["text"].tolist() == cells
    assert pd.to_numeric(read["number"]).tolist() == pytest.approx(table["number"].tolist())


def test_3_every_csv_writer_goes_through_the_neutraliser():
    unguarded = []
    for path in sorted((ROOT / "covid_tf").rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if ".to_csv(" in line and "neutralise_formulas(" not in line and path.name != "io_utils.py":
                unguarded.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
            if "csv.writer(" in line:
                unguarded.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    # resume.py's partial history holds epoch numbers and metrics only (nothing a spreadsheet would run).
    assert [line for line in unguarded if "training/resume.py" not in line] == []


# ------------------------------------------------------------------------- 4. images the index leaves out


def test_4_images_not_in_the_index_are_counted_and_named(server, formula_run, formula_data, tmp_path):
    child, _ = formula_run
    for output in (cli(server, "inspect", formula_data).stderr, child.stderr):
        notes = [line for line in output.splitlines() if "not listed in metadata.csv" in line]
        assert len(notes) == 1 and notes[0].startswith("warning: ") and "1 image file(s)" in notes[0], output
        assert UNLISTED in notes[0]
    # evaluate says the same note as a warning, like inspect and train
    _, run = formula_run
    evaluated = cli(server, "evaluate", run / "model.keras", formula_data, "--out", tmp_path / "eval",
                    "--n-bootstrap", "0")
    assert evaluated.code == 0, evaluated.stderr[-2000:]
    assert any(line.startswith("warning: ") and UNLISTED in line for line in evaluated.stderr.splitlines())


# ------------------------------------------------------------------------------------ 5. newcomer fixes


def test_5_lung_mask_note_reads_as_a_sentence():
    from covid_tf.lungs.roi.mask_table import fallback_note

    table = pd.DataFrame({"path": ["a", "b", "c"], "lung_mask_source": ["dataset", "dataset", "segmenter"],
                          "roi_applied": [True, True, True], "reason": ["", "", ""]})
    expected = "lung masks: 2 from the dataset, 1 from the segmenter; every image has plausible lungs"
    assert fallback_note(table) == expected


def test_5_progress_bar_does_not_warn_in_a_notebook_without_ipywidgets(monkeypatch):
    from covid_tf import io_utils

    # What tqdm.auto sees inside a Jupyter kernel that has no ipywidgets.
    shell = type("ZMQInteractiveShell", (), {})()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", types.ModuleType("ipykernel.zmqshell"))
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    for name in ("tqdm.auto", "tqdm.autonotebook"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        io_utils.show_progress(True)
        assert list(io_utils.progress_bar(range(3), total=3)) == [0, 1, 2]
    assert [str(w.message) for w in caught if "IProgress" in str(w.message)] == []


def test_5_pyproject_license_is_an_spdx_string():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # tomllib is Python 3.11+; 3.10 is supported
    assert re.search(r'^license = "MIT"$', text, re.M) and "License ::" not in text
    assert re.search(r'requires = \["setuptools>=(7[7-9]|[89]\d)', text)  # SPDX strings need setuptools 77


def test_5_a_saved_model_takes_a_batch_without_a_structure_warning(tmp_path):
    import keras

    from covid_tf.models.common import save_model
    from covid_tf.models.registry import build_model

    save_model(build_model("small", image_size=32, channels=1, num_classes=2, weights=None), tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    batch = np.zeros((2, 32, 32, 1), dtype=np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded(batch)
        keras.models.clone_model(loaded)(batch)  # the sanity check's clone (notebook 04's quality cell)
    assert [str(w.message) for w in caught if "structure of `inputs`" in str(w.message)] == []


def test_5_train_says_the_left_out_classes_before_the_epochs(tmp_path):
    """A real ``python -m covid_tf train`` with stdout and stderr in one pipe, unbuffered: the order is the user's."""
    data = make_class_folders(tmp_path / "data", {"COVID": 8, "Normal": 8, "Lung Opacity": 3}, size=32)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    argv = [sys.executable, "-m", "covid_tf", "train", str(data), "--out", str(tmp_path / "run"), "--classes",
            "COVID,Normal", "--epochs", "1", "--model", "small", "--image-size", "32", "--batch-size", "4",
            "--precise-bn-images", "0", "--roi", "none"]
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=600,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]
    output = done.stdout
    assert "warning: " in output and "'Lung Opacity' are left out" in output, output[-3000:]
    assert output.index("'Lung Opacity' are left out") < output.index(" loss: "), output[-3000:]  # Keras's epoch line


def test_5_sanity_check_clones_a_compiled_model_whose_metric_holds_a_tensor():
    """Notebook 04's quality cell on a freshly trained model: its AUC metric has label weights (a tensor)."""
    import keras

    from covid_tf.explain.sanity import randomization_sanity_check
    from covid_tf.models.registry import build_model

    model = build_model("small", image_size=32, channels=1, num_classes=2, weights=None)
    auc = keras.metrics.AUC(multi_label=True, num_labels=2, label_weights=[1.0, 0.0], name="auc_COVID")
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=[auc])
    images = np.random.default_rng(0).random((4, 32, 32, 1)).astype(np.float32)
    model.fit(images, np.eye(2)[[0, 1, 0, 1]], epochs=1, verbose=0)
    check = randomization_sanity_check(model, images[:2], method="gradcam", class_index=0)
    assert np.isfinite(check["mean_correlation"])

"""Fuzz of a run folder's files: the commands that read them never print a traceback.

A finished tiny run (and an evaluation of its model) is built once; then, case by case, one of its files
(``config.json``, ``metrics.json``, ``history.csv``, ``split.csv``, ``roi.csv``) is replaced by a seeded
random variant (a key set to a string, a list, null, a nested object, NaN, a huge number; class names that
are a number; versions as a string; confidence intervals of text or garbage; CSV cells of the wrong type;
files cut short or not JSON at all) and a command that reads it runs in-process through
``covid_tf.cli.main``: ``report RUN``, ``predict MODEL IMAGE``, ``explain MODEL IMAGE``, ``evaluate MODEL
DATA``, ``figures RUN``. Each must either work (exit 0) or stop with exit 2 and one ``error:`` line that names
the file (and, for a key of a JSON file set to a value of the wrong type, the key); never a traceback.
The original file is put back after each case.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pandas as pd
import pytest

from covid_tf.cli import main

TRACEBACK = "Traceback (most recent call last)"
SEED = 3
FAST = ["--model", "small", "--image-size", "32", "--batch-size", "4", "--patience", "100",
        "--precise-bn-images", "0", "--quiet"]
TEXTS = ["", "abc", "<b>high</b>", "NaN", "0.5", "1e309", "-1", "../../etc/passwd", "=cmd|' /C calc'!A0",
         "COVID", "none", "auto", "lungs-crop", "lungs-attention", "lungs-masked", "\u00e9\u00e8\u4e2d", " ", "null",
         "[1, 2]", "{}"]
PNG_1X1 = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010800000000"
                        "3a7e9b550000000a49444154789c6360000000020001e221bc330000000049454e44ae426082")
NUMBERS = [0, 1, -1, 2, 3, 32, 0.5, -0.0, 3.7, 1e308, 10**30, -(10**20), math.nan, math.inf, -math.inf, True, False]


def random_value(rng: random.Random, depth: int = 0):
    """A random JSON value: text, numbers (NaN and infinities included), null, lists, nested objects."""
    kind = rng.choice(["text", "number", "null", "list", "object"] if depth < 2 else ["text", "number", "null"])
    if kind == "text":
        return rng.choice(TEXTS)
    if kind == "number":
        return rng.choice(NUMBERS)
    if kind == "null":
        return None
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["a", "COVID", "accuracy", "covid_tf", "0", "mode"]
    return {rng.choice(keys): random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def garbage_text(rng: random.Random) -> str:
    """A whole file that is not what it should be."""
    return rng.choice(["", "{", "not json at all", "[1, 2, 3]", "null", '"a string"', "42", "\x00\x01\x02\xff",
                       '{"a": NaN, "b": [1e999]}', "epoch,loss\n", "\n\n\n", "a,b\n1,2,3\n\"unterminated\n"])


def mutate_json(rng: random.Random, original: dict, keys: list[str]) -> tuple[str, str | None]:
    """The text of a fuzzed JSON file and the top-level key it changed (None: the whole file)."""
    roll = rng.random()
    if roll < 0.1:
        return garbage_text(rng), None
    if roll < 0.2:
        return json.dumps(random_value(rng, 1)), None
    data = json.loads(json.dumps(original))
    key = rng.choice(keys)
    if roll < 0.28:
        data.pop(key, None)
    elif roll < 0.6 and isinstance(data.get(key), dict) and data[key]:
        inner = rng.choice(list(data[key]))
        data[key][inner] = random_value(rng)
    else:
        data[key] = random_value(rng)
    return json.dumps(data), key


def mutate_csv(rng: random.Random, original: str) -> str:
    """The text of a fuzzed CSV table: cells of the wrong type, a changed header, rows cut or doubled."""
    roll = rng.random()
    if roll < 0.15:
        return garbage_text(rng)
    lines = original.splitlines()
    header, rows = lines[0], [line.split(",") for line in lines[1:]]
    if roll < 0.25:
        columns = header.split(",")
        columns[rng.randrange(len(columns))] = rng.choice(["", "x", "epoch", "path", "\u00e9"])
        return "\n".join([",".join(columns), *(",".join(row) for row in rows)]) + "\n"
    if roll < 0.35:
        return "\n".join([header, *(",".join(row) for row in rows[: rng.randint(0, 1)])]) + "\n"
    if roll < 0.42:
        return "\n".join([header, *(",".join(row) for row in rows), header, *(",".join(row) for row in rows)]) + "\n"
    for _ in range(rng.randint(1, 4)):
        if rows:
            row = rng.choice(rows)
            cell = rng.choice(TEXTS + ["nan", "inf", "-inf", "1e400", "99999999999999999999", "True", "-3"])
            row[rng.randrange(len(row))] = '"' + cell.replace('"', "") + '"' if "," in cell else cell
    return "\n".join([header, *(",".join(row) for row in rows)]) + "\n"


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    """A finished one-epoch run, an evaluation of its model, and the data (2 classes x 6 images, 32 px)."""
    root = tmp_path_factory.mktemp("fuzz")
    data, run, evaluation = root / "data", root / "run", root / "evaluation"
    assert main(["synth", "--out", str(data), "--per-class", "6", "--size", "32", "--seed", "4", "--quiet"]) == 0
    assert main(["train", str(data), "--out", str(run), "--epochs", "1", "--roi", "none", *FAST]) == 0
    assert main(["evaluate", str(run / "model.keras"), str(data), "--out", str(evaluation), "--n-bootstrap", "5",
                 "--quiet"]) == 0
    image = next(iter(sorted(data.rglob("*.png"))))
    return {"data": data, "run": run, "evaluation": evaluation, "image": image}


@pytest.fixture(autouse=True)
def quick_figures(monkeypatch):
    """Figures are drawn (every plotting call runs on the fuzzed values) but neither laid out nor rendered: a
    figure file is a 1x1 PNG, which makes a case of ``figures`` or ``evaluate`` several times faster."""
    from matplotlib.figure import Figure

    def savefig(self, fname, *args, **kwargs):
        Path(fname).write_bytes(PNG_1X1) if not hasattr(fname, "write") else fname.write(PNG_1X1)

    monkeypatch.setattr(Figure, "savefig", savefig)
    monkeypatch.setattr(Figure, "tight_layout", lambda self, *args, **kwargs: None)


@pytest.fixture
def folders(pristine, tmp_path) -> dict[str, Path]:
    """A copy of the run and the evaluation for this test (its files are changed), and a folder for outputs."""
    run, evaluation = tmp_path / "run", tmp_path / "evaluation"
    shutil.copytree(pristine["run"], run)
    shutil.copytree(pristine["evaluation"], evaluation)
    config = json.loads((evaluation / "config.json").read_text())
    config["model_path"] = str(run / "model.keras")  # the copy's model, whose history.csv is fuzzed
    (evaluation / "config.json").write_text(json.dumps(config))
    return {**pristine, "run": run, "evaluation": evaluation, "outs": tmp_path / "outs"}


def commands(folders: dict[str, Path], case: str) -> dict[str, list[str]]:
    """Each command that reads the run's files, with its own --out for ``case``."""
    run, out = folders["run"], folders["outs"] / case
    model = str(run / "model.keras")
    return {
        "report": ["report", str(run), str(folders["evaluation"]), "--out", str(out / "report.html")],
        "predict": ["predict", model, str(folders["image"]), "--out", str(out / "predictions.csv")],
        "explain": ["explain", model, str(folders["image"]), "--out", str(out / "explain")],
        "evaluate": ["evaluate", model, str(folders["data"]), "--out", str(out / "evaluation"), "--n-bootstrap", "5"],
        "figures": ["figures", str(run), "--out", str(out / "figures"), "--format", "png"],
        "figures-eval": ["figures", str(folders["evaluation"]), "--out", str(out / "figures-eval"), "--format", "png"],
    }


def run_case(capsys, argv: list[str]) -> tuple[int | None, str, str]:
    """``main(argv)`` in-process: its exit code and output, or (None, the uncaught exception) for a crash."""
    capsys.readouterr()
    try:
        code = main([*argv, "--quiet"])
    except SystemExit as stop:  # argparse
        code = stop.code
    except Exception as error:  # noqa: BLE001 (what the fuzz looks for)
        out, err = capsys.readouterr()
        return None, out, f"{err}\nuncaught {type(error).__name__}: {error}"
    out, err = capsys.readouterr()
    return code, out, err


def problem(code, out: str, err: str, file_name: str, key: str | None) -> str | None:
    """What is wrong with one command's outcome (None when it worked or stopped with one named error)."""
    if code is None or TRACEBACK in out + err:
        return err.strip().splitlines()[-1] if err.strip() else "crash"
    if code == 0:
        return None
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    if code != 2 or len(errors) != 1:
        return f"exit {code}, {len(errors)} error lines: {err.strip()[-300:]}"
    if file_name not in errors[0]:
        return f"the error does not name {file_name}: {errors[0]}"
    if key is not None and key not in errors[0]:
        return f"the error does not name the key {key!r}: {errors[0]}"
    return None


def fuzz(capsys, folders, relative: str, count: int, names: list[str], weights: list[float]) -> list[str]:
    """``count`` seeded cases of the file ``relative`` (run/... or evaluation/...), each read by one of the
    commands ``names`` (chosen with ``weights``); the failures as lines, with the text that caused them."""
    rng = random.Random(f"{SEED}-{relative}")
    path = folders[relative.split("/")[0]] / relative.split("/", 1)[1]
    original = path.read_text()
    failures = []
    for number in range(count):
        if path.suffix == ".json":
            data = json.loads(original)
            text, key = mutate_json(rng, data, list(data))
        else:
            text, key = mutate_csv(rng, original), None
        path.write_text(text)
        name = rng.choices(names, weights)[0]
        code, out, err = run_case(capsys, commands(folders, f"{relative.replace('/', '-')}-{number}")[name])
        found = problem(code, out, err, path.name, key)
        if found is not None:
            failures.append(f"{name} with {relative} = {text[:160]!r}: {found}")
        path.write_text(original)
    return failures


def assert_no_failures(failures: list[str]) -> None:
    assert not failures, f"{len(failures)} failure(s):\n" + "\n".join(failures[:15])


# ------------------------------------------------------------------------------------------------- cases


def test_fuzzed_config_json_never_crashes_a_command(capsys, folders):
    assert_no_failures(fuzz(capsys, folders, "run/config.json", 90,
                            ["report", "predict", "explain", "evaluate", "figures"], [4, 4, 1, 0.5, 0.8]))


def test_fuzzed_evaluation_config_json_never_crashes_a_command(capsys, folders):
    assert_no_failures(fuzz(capsys, folders, "evaluation/config.json", 40, ["report", "figures-eval"], [3, 1]))


def test_fuzzed_metrics_json_never_crashes_the_report(capsys, folders):
    failures = fuzz(capsys, folders, "run/metrics.json", 70, ["report"], [1])
    failures += fuzz(capsys, folders, "evaluation/metrics.json", 30, ["report"], [1])
    assert_no_failures(failures)


def test_fuzzed_tables_never_crash_a_command(capsys, folders):
    # An evaluation's figures draw the training curves of its model's run: its history.csv.
    failures = fuzz(capsys, folders, "run/history.csv", 24, ["figures-eval", "figures", "evaluate"], [5, 1.5, 1])
    failures += fuzz(capsys, folders, "run/split.csv", 12, ["figures"], [1])
    failures += fuzz(capsys, folders, "evaluation/predictions.csv", 14, ["figures-eval"], [1])
    assert_no_failures(failures)


def test_fuzzed_roi_table_is_read_or_named(folders):
    """``roi.csv`` (read back when a finished run is reused: ``audit``, the notebooks) is a table with a
    ``path`` column and true/false ``roi_applied``, or one ``CovidTfError`` naming it."""
    from covid_tf.errors import CovidTfError
    from covid_tf.runs.record import RunRecord

    path = folders["run"] / "roi.csv"
    images = sorted(str(image) for image in folders["data"].rglob("*.png"))[:6]
    original = "path,mask_path,lung_mask_source,roi_applied,reason\n" + "".join(
        f"{image},{image},dataset,{index % 2 == 0},\n" for index, image in enumerate(images))
    rng = random.Random(f"{SEED}-roi")
    failures = []
    for _ in range(40):
        text = mutate_csv(rng, original)
        path.write_text(text)
        try:
            table = RunRecord(folders["run"]).roi_table()
            assert "path" in table.columns and table["roi_applied"].map(type).eq(bool).all()
        except CovidTfError as error:
            if "roi.csv" not in str(error):
                failures.append(f"{text[:120]!r}: {error}")
        except Exception as error:  # noqa: BLE001 (what the fuzz looks for)
            failures.append(f"{text[:120]!r}: {type(error).__name__}: {error}")
    assert_no_failures(failures)


# --------------------------------------------------------------------------------------- known cases


@pytest.mark.parametrize(("file_name", "change", "command", "key"), [
    ("config.json", {"versions": "covid_tf 0.1, keras 3"}, "report", None),  # was a TypeError
    ("metrics.json", {"test": {"accuracy": 0.5, "ci95": {"accuracy": ["<b>high</b>", 1]}}}, "report", None),
    ("metrics.json", {"test": {"accuracy": 0.5, "ci95": {"accuracy": "garbage"}}}, "report", None),
    ("config.json", {"class_names": 3}, "predict", "class_names"),  # was a TypeError
    ("config.json", [], "predict", None),  # a JSON list, not an object: was an AttributeError
])
def test_known_cases(capsys, folders, file_name, change, command, key):
    path = folders["run"] / file_name
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, **change} if isinstance(change, dict) else change))
    code, out, err = run_case(capsys, commands(folders, "known")[command])
    assert problem(code, out, err, file_name, key) is None, err[-2000:]
    if command == "report" and code == 0:
        assert "?" in (folders["outs"] / "known" / "report.html").read_text()


def test_report_shows_a_value_of_the_wrong_type_as_a_question_mark(capsys, folders):
    """The report's choice for odd values it can show without harm: '?' in their cell, never a crash."""
    path = folders["run"] / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["test"]["roc_auc"] = "<b>high</b>"
    metrics["test"]["ci95"] = {"accuracy": ["low", None], "roc_auc": {"a": 1}}
    path.write_text(json.dumps(metrics))
    config = json.loads((folders["run"] / "config.json").read_text())
    (folders["run"] / "config.json").write_text(json.dumps({**config, "versions": "1.0", "image_size": [32]}))
    code, _, err = run_case(capsys, commands(folders, "odd")["report"])
    assert code == 0, err
    page = (folders["outs"] / "odd" / "report.html").read_text()
    assert "<b>high</b>" not in page and "&lt;b&gt;" not in page
    assert '? <span class="ci">[?]</span>' in page  # the ROC-AUC and its interval
    assert "<th>versions</th><td>?</td>" in page and "<th>image size</th><td>?</td>" in page


def test_history_with_text_cells_reads_as_numbers_or_is_named(folders):
    """``RunRecord.history`` gives numbers (text cells as NaN) with integer epochs, or None when it has no
    usable epochs, so no reader meets a string in a numeric column."""
    from covid_tf.runs.record import RunRecord

    path = folders["run"] / "history.csv"
    table = pd.read_csv(path)
    table["loss"] = table["loss"].astype(object)
    table.loc[0, "loss"] = "<b>high</b>"
    table.to_csv(path, index=False)
    history = RunRecord(folders["run"]).history()
    assert history is not None and pd.api.types.is_numeric_dtype(history["loss"])
    assert history["epoch"].tolist() == list(range(len(history)))

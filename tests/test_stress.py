"""The ``stress`` check: each acquisition shift on arrays with known answers, strength 0 as the identity, the AUC
rows and the one-line summary, a model that reads only the film's brightness (it collapses under gamma), every kind
of model input (plain, crop, masked, lung attention), the command end to end on a tiny trained run, bad inputs."""

from __future__ import annotations

import json
import re

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from covid_tf.cli import main
from covid_tf.data import shifts
from covid_tf.data.images import save_png
from covid_tf.errors import CovidTfError
from covid_tf.evaluation import stress as stress_stats
from covid_tf.figures.stress import plot_stress_summary
from covid_tf.runs import variants
from covid_tf.workflows import stress

SIZE = 48
ALL_AT_ZERO = {name: (0.0,) for name in shifts.SHIFTS}


def lung_mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[10:40, 6:21] = mask[10:40, 27:42] = True
    return mask


def write_dataset(root, per_class: int = 16, classes=("COVID", "Normal"), seed: int = 0):
    """``<Class>/images`` + ``masks/``: COVID films are a little brighter (0.505-0.55 against 0.45-0.495), with
    lung texture: a shortcut of exposure, as between two sources."""
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name / "images").mkdir(parents=True)
        (root / name / "masks").mkdir()
        for i in range(per_class):
            level = rng.uniform(0.505, 0.55) if name == "COVID" else rng.uniform(0.45, 0.495)
            image = np.clip(level + rng.normal(0, 0.05, (SIZE, SIZE)) * lung_mask(), 0, 1)
            save_png(image[..., None].astype(np.float32), root / name / "images" / f"{name}-{i}.png")
            save_png(lung_mask().astype(np.uint8) * 255, root / name / "masks" / f"{name}-{i}.png")
    return root


def brightness_model() -> keras.Model:
    """p(COVID) = sigmoid(40 * (mean brightness - 0.5)): a model that reads nothing but the film's exposure."""
    model = keras.Sequential([keras.Input((SIZE, SIZE, 1)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(2, activation="softmax")])
    model.layers[-1].set_weights([np.array([[20.0, -20.0]], np.float32), np.array([-10.0, 10.0], np.float32)])
    return model


def save_run(model: keras.Model, folder, roi: str = "none", classes=("COVID", "Normal")):
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    (folder / "config.json").write_text(json.dumps({"class_names": list(classes), "roi": roi}))
    return folder / "model.keras"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("stress") / "data")


# ---- the shifts -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(shifts.SHIFTS))
def test_every_shift_is_the_identity_at_zero_and_changes_the_image_otherwise(name):
    rng = np.random.default_rng(0)
    image = rng.uniform(0.1, 0.9, (40, 56, 1)).astype(np.float32)
    same, mask = shifts.apply_shift(name, image, lung_mask()[:40], 0.0, np.random.default_rng(1))
    assert same is image and mask is not None and mask.shape == (40, 48)
    strongest = shifts.SHIFTS[name].strengths[-1]
    first = shifts.apply_shift(name, image, None, strongest, np.random.default_rng(2))[0]
    again = shifts.apply_shift(name, image, None, strongest, np.random.default_rng(2))[0]
    assert first.shape == image.shape and first.dtype == np.float32 and 0.0 <= first.min() <= first.max() <= 1.0
    np.testing.assert_array_equal(first, again)  # seeded
    assert np.abs(first - image).max() > 0.1 and np.abs(first - image).mean() > 0.001, name
    colour = np.repeat(image, 3, axis=-1)
    assert shifts.apply_shift(name, colour, None, strongest, np.random.default_rng(2))[0].shape == colour.shape


def test_shifts_with_known_answers():
    image = np.full((20, 20, 1), 0.25, np.float32)
    exposures = [float(shifts.gamma(image, 1.0, np.random.default_rng(s))[0, 0, 0]) for s in range(200)]
    assert 0.0625 <= min(exposures) < 0.08 and 0.45 < max(exposures) <= 0.5  # 0.25 ** 2 ... 0.25 ** 0.5
    assert np.mean(np.array(exposures) < 0.25) == pytest.approx(0.5, abs=0.1)  # darker or lighter, per image
    assert shifts.invert(image, 1.0, np.random.default_rng(0))[0, 0, 0] == 0.75
    inverted = [shifts.invert(image, 0.5, np.random.default_rng(s))[0, 0, 0] == 0.75 for s in range(200)]
    assert 0.4 < np.mean(inverted) < 0.6  # half of the films
    ramp = np.tile(np.linspace(0, 1, 20, dtype=np.float32), (20, 1))[..., None]
    assert shifts.contrast(ramp, 1.0, np.random.default_rng(0)).std() != pytest.approx(ramp.std())
    assert shifts.resolution(ramp, 1.0, np.random.default_rng(0)).shape == ramp.shape
    padded = shifts.pad(np.ones((40, 40, 1), np.float32), 0.25, np.random.default_rng(0))
    assert padded.mean() == pytest.approx(0.8 ** 2, abs=0.03)  # a quarter of each side added in black
    labelled = shifts.text(np.zeros((64, 64, 1), np.float32), 0.1, np.random.default_rng(0))
    assert 0 < (labelled > 0.5).mean() < 0.2 and labelled[24:40, 24:40].max() == 0  # in corners, not the middle


def test_crop_and_pad_move_the_lung_mask_with_the_film():
    image, mask = np.random.default_rng(0).random((48, 48, 1)).astype(np.float32), lung_mask()
    for name in ("crop", "pad"):
        moved_image, moved_mask = shifts.apply_shift(name, image, mask, 0.2, np.random.default_rng(5))
        assert moved_mask.shape == mask.shape and moved_mask.dtype == bool and not np.array_equal(moved_mask, mask)
        on_mask = shifts.apply_shift(name, mask[..., None].astype(np.float32), None, 0.2, np.random.default_rng(5))
        np.testing.assert_array_equal(moved_mask, on_mask[0][..., 0] > 0.5)  # the same draw as the image's
    assert shifts.apply_shift("gamma", image, mask, 1.0, np.random.default_rng(0))[1] is mask


def test_shift_specs_parse_and_bad_ones_say_why():
    assert shifts.parse_shifts("gamma:0.5:1, blur") == {"gamma": (0.5, 1.0), "blur": shifts.SHIFTS["blur"].strengths}
    assert list(shifts.parse_shifts(None)) == list(shifts.SHIFTS)
    assert shifts.parse_shifts({"noise": [0, 0.1]}) == {"noise": (0.0, 0.1)}
    for spec, reason in [("sharpen", "unknown shift 'sharpen'"), ("gamma:x", "must be numbers"),
                         ("crop:0.95", "outside [0, 0.9]"), ("noise:-0.1", "outside"), (",", "no shift given")]:
        with pytest.raises(ValueError, match=re.escape(reason)):
            shifts.parse_shifts(spec)


# ---- the numbers and the figure ---------------------------------------------------------------------------------


def test_stress_rows_are_sklearns_aucs_with_paired_drops():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 80)
    original = rng.random(80) + y * 0.8
    scores = np.stack([original, original, rng.random(80) + y * 0.2, original + 0.01], axis=1)
    keys = [("original", None), ("gamma", 0.0), ("gamma", 1.0), ("invert", 1.0)]
    rows = stress_stats.stress_results(y, scores, 1, keys, n_bootstrap=200)
    assert rows[0]["auc"] == pytest.approx(roc_auc_score(y, original)) and rows[0]["drop"] == 0.0
    assert rows[1]["auc"] == rows[0]["auc"] and rows[1]["drop"] == 0.0 and rows[1]["drop_ci95"] == [0.0, 0.0]
    assert rows[2]["drop"] == pytest.approx(roc_auc_score(y, original) - roc_auc_score(y, scores[:, 2]))
    low, high = rows[2]["drop_ci95"]
    assert 0 < low <= rows[2]["drop"] <= high
    totals = stress_stats.summarise(rows, sanity=["invert"])
    assert totals["n_shifted"] == 1 and totals["worst"] is rows[2] and totals["mean_drop"] == rows[2]["drop"]
    line = stress_stats.summary_line(rows, totals, "COVID")
    assert line.startswith("stress: ROC-AUC of COVID") and "worst gamma 1" in line and "sanity case invert 1" in line
    assert "\n" not in line
    kept = rows[:2] + rows[3:]  # the original, gamma at strength 0 and the sanity case
    only_sanity = stress_stats.summary_line(kept, stress_stats.summarise(kept, ["invert"]), "COVID")
    assert "no shift at a strength above 0 but the sanity cases; sanity case invert 1" in only_sanity
    figure = plot_stress_summary({"results": rows, "auc": "ROC-AUC of COVID", "n": 80, "mean_drop": 0.1,
                                  "worst": rows[2], "shifts": {"gamma": {"title": "exposure (gamma)"}}})
    ax = figure.axes[0]
    assert len(ax.patches) == 3 + 1 and ax.get_yticklabels()[1].get_text() == "exposure (gamma) 1"  # + the CI band
    assert "worst: exposure (gamma) 1 (drop 0.308)" in ax.get_title()
    assert any(list(line.get_xdata()) == [0.5, 0.5] for line in ax.get_lines())


# ---- models ------------------------------------------------------------------------------------------------------


def test_a_brightness_model_collapses_under_gamma_and_strength_zero_changes_nothing(data, tmp_path):
    model = save_run(brightness_model(), tmp_path / "run")
    result = stress.run_stress(model, data, tmp_path / "out", shifts={"gamma": (0.0, 1.0), "blur": (0.02,)},
                               n_bootstrap=100)
    by_key = {(row["shift"], row["strength"]): row for row in result.rows}
    original = by_key[("original", None)]
    assert original["auc"] == 1.0
    assert by_key[("gamma", 0.0)]["auc"] == original["auc"] and by_key[("gamma", 0.0)]["drop"] == 0.0
    collapsed = by_key[("gamma", 1.0)]
    assert collapsed["auc"] <= 0.75 and collapsed["drop"] >= 0.25 and collapsed["drop_ci95"][0] > 0  # 1.0 -> 0.695
    assert by_key[("blur", 0.02)]["auc"] == 1.0  # a blur keeps the brightness it reads
    assert result.summary["worst"]["shift"] == "gamma" and "worst gamma 1" in result.line
    import shutil

    moved = shutil.copytree(data, tmp_path / "elsewhere")  # the same data in another folder: the same shifts
    again = stress.run_stress(model, moved, tmp_path / "again", shifts={"gamma": (0.0, 1.0), "blur": (0.02,)},
                              n_bootstrap=100)
    assert again.rows == result.rows


@pytest.mark.parametrize("roi", ["none", "lungs", "lungs-masked", "lungs-removed", "lungs-attention",
                                 "ct-lungs-attention"])
def test_every_model_input_kind_goes_through_and_strength_zero_leaves_its_auc(data, tmp_path, roi):
    if roi.endswith("lungs-attention"):
        from covid_tf.models.registry import build_model

        model = build_model("baseline", image_size=SIZE, channels=1, num_classes=2, lung_attention=True,
                            normalization="per_image")
    else:
        model = brightness_model()
    path = save_run(model, tmp_path / "run", roi=roi)
    result = stress.run_stress(path, data, tmp_path / "zero", shifts=ALL_AT_ZERO, n_bootstrap=20)
    assert result.summary["roi"] == roi and result.summary["n"] == 32
    assert all(row["auc"] == result.rows[0]["auc"] and row["drop"] == 0.0 for row in result.rows[1:]), result.rows
    if roi != "none":
        assert result.summary["lung_mask_sources"] == {"dataset": 32}
    moved = stress.run_stress(path, data, tmp_path / "moved", shifts="crop:0.2,pad:0.2,text:0.1", n_bootstrap=0)
    assert [row["shift"] for row in moved.rows] == ["original", "crop", "pad", "text"]
    assert all(row["auc"] is not None and row["ci95"] == [None, None] for row in moved.rows)


def test_a_three_class_model_is_scored_positive_against_the_rest(tmp_path):
    classes = ("COVID", "Normal", "Viral Pneumonia")
    data = write_dataset(tmp_path / "data", per_class=6, classes=classes)
    model = keras.Sequential([keras.Input((SIZE, SIZE, 1)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    model.layers[-1].set_weights([np.array([[20.0, -20.0, -20.0]], np.float32), np.array([-10.0, 10.0, 10.0],
                                                                                         np.float32)])
    result = stress.run_stress(save_run(model, tmp_path / "run", classes=classes), data, tmp_path / "out",
                               shifts="gamma:1", n_bootstrap=0)
    assert result.summary["auc"] == "ROC-AUC of COVID vs rest" and result.rows[0]["auc"] == 1.0
    assert result.rows[1]["auc"] < 1.0 and result.line.startswith("stress: ROC-AUC of COVID vs rest 1.000 on")


def test_the_attention_input_keeps_the_original_mask_unless_the_film_moves(data, tmp_path):
    from covid_tf.models.registry import build_model
    from covid_tf.runs.inference import loaded_model

    model = build_model("baseline", image_size=SIZE, channels=1, num_classes=2, lung_attention=True,
                        normalization="per_image")
    loaded = loaded_model(model, tmp_path / "model.keras", class_names=["COVID", "Normal"])
    image_path = str(data / "COVID" / "images" / "COVID-0.png")
    loader = variants.ShiftLoader(loaded, {"gamma": (1.0,), "pad": (0.2,)},
                                {image_path: str(data / "COVID" / "masks" / "COVID-0.png")})
    inputs = loader(image_path)
    assert inputs.shape == (3, SIZE, SIZE, 2)
    np.testing.assert_array_equal(inputs[1, ..., 1], inputs[0, ..., 1])  # gamma: the same lungs
    assert not np.array_equal(inputs[2, ..., 1], inputs[0, ..., 1])  # pad: the lungs moved with the film
    assert not np.array_equal(inputs[1, ..., 0], inputs[0, ..., 0])


# ---- the command and bad inputs ---------------------------------------------------------------------------------


def test_command_end_to_end_on_a_tiny_trained_run(tmp_path, capsys):
    from covid_tf.runs.config import TrainConfig
    from covid_tf.synthetic.xray import generate_dataset
    from covid_tf.workflows.train import train_run

    generate_dataset(tmp_path / "data", classes=("COVID", "Normal"), per_class=16, size=48, seed=1)
    cfg = TrainConfig(data=str(tmp_path / "data"), image_size=32, epochs=1, batch_size=8, n_bootstrap=10,
                      precise_bn_images=0, roi="lungs-attention", split_fractions=(0.5, 0.2, 0.3))
    train_run(cfg, tmp_path / "run", verbose=0, figures=False)
    out = tmp_path / "out"
    argv = ["stress", str(tmp_path / "run" / "model.keras"), str(tmp_path / "data"), "--out", str(out),
            "--split-file", str(tmp_path / "run" / "split.csv"), "--shifts", "gamma,jpeg:0.5,crop,invert",
            "--n-bootstrap", "20", "-q"]
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("stress: ROC-AUC of COVID") for line in printed) == 1
    assert any(line.strip().startswith("jpeg 0.5:") for line in printed)
    assert {p.name for p in out.iterdir()} == set(stress.OUTPUT_FILES)
    saved = json.loads((out / "stress.json").read_text())
    assert saved["roi"] == "lungs-attention" and 0 < saved["n"] < 32 and saved["subset"] is None
    assert len(saved["results"]) == 1 + 3 + 1 + 3 + 2 and saved["shifts"]["invert"]["sanity"] is True
    assert saved["worst"]["shift"] != "invert" and isinstance(saved["mean_drop"], float)
    assert {"auc", "ci95", "drop", "drop_ci95", "n"} <= set(saved["results"][1])
    assert main(argv) == 2 and "already holds a stress check" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--max-images", "6", "--shifts", "noise"]) == 0
    assert json.loads((out / "stress.json").read_text())["n"] == 6


def test_bad_inputs_give_one_clear_error(data, tmp_path, capsys):
    model = save_run(brightness_model(), tmp_path / "run")
    one_class = write_dataset(tmp_path / "one", per_class=3, classes=("Normal",))
    cases = [
        (["--shifts", "sharpen"], str(tmp_path / "o1"), "unknown shift 'sharpen'"),
        (["--shifts", "blur:5"], str(tmp_path / "o1"), "outside [0, 0.2]"),
        (["--max-images", "1"], str(tmp_path / "o1"), "--max-images must be at least 2"),
        ([], str(data / "inside"), "inside the input folder"),
        ([], str(tmp_path / "run"), "choose another"),
    ]
    for extra, out, reason in cases:
        assert main(["stress", str(model), str(data), "--out", out, *extra, "-q"]) == 2, reason
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and reason in err[0], err
    assert main(["stress", str(model), str(one_class), "--out", str(tmp_path / "o2"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "only Normal" in err and "needs it and another class" in err
    assert main(["stress", str(tmp_path / "missing.keras"), str(data), "--out", str(tmp_path / "o3"), "-q"]) == 2
    assert "missing.keras" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists() and not (data / "inside").exists() and not (tmp_path / "o2").exists()
    with pytest.raises(CovidTfError, match="--shifts: unknown shift"):
        stress.run_stress(model, data, tmp_path / "o4", shifts=["gamma", "nope"])


def test_an_image_broken_after_indexing_is_left_out_with_its_reason(tmp_path):
    from covid_tf.runs.inference import loaded_model

    loaded = loaded_model(brightness_model(), tmp_path / "model.keras", class_names=["COVID", "Normal"])
    path = tmp_path / "x.png"
    save_png(np.full((SIZE, SIZE, 1), 0.5, np.float32), path)
    loader = variants.ShiftLoader(loaded, {"noise": (0.1,)})
    assert loader.checked(str(path))[1] == "" and loader.checked(str(path))[0].shape == (2, SIZE, SIZE, 1)
    path.write_bytes(path.read_bytes()[:60])
    inputs, reason = loader.checked(str(path))
    assert reason.startswith("image unreadable") and inputs.shape == (2, SIZE, SIZE, 1) and not inputs.any()

"""The counterfactual lung check (``occlusion``): fills and dilation on arrays with known answers, the AUCs and
the verdict, deterministic tiny Keras models whose decision we control (one reads the lungs' texture, one a
corner outside them), the lung-attention mask channel, the ROI applied after filling, bad inputs, the command."""

from __future__ import annotations

import dataclasses
import json

import cv2
import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from covid_tf import config as occlusion_config
from covid_tf.cli import main
from covid_tf.data.images import save_png
from covid_tf.errors import CovidTfError
from covid_tf.evaluation import occlusion as occlusion_stats
from covid_tf.figures.occlusion import plot_occlusion
from covid_tf.lungs.roi import fills
from covid_tf.lungs.roi.inputs import roi_image
from covid_tf.lungs.roi.modes import RoiSpec
from covid_tf.runs import variants
from covid_tf.runs.inference import load_model, loaded_model
from covid_tf.workflows import occlusion

SIZE = 64
LUNGS = ((slice(14, 50), slice(8, 28)), (slice(14, 50), slice(36, 56)))  # two "lungs", left and right
CORNER = (slice(2, 10), slice(2, 10))  # outside the lungs, well beyond the dilation


def lung_mask(size: int = SIZE) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    for rows, cols in LUNGS:
        mask[rows, cols] = True
    return mask


def make_image(rng: np.random.Generator, texture: float, marker: bool) -> np.ndarray:
    """Grey film, flat lungs at 0.45 with noise of amplitude ``texture`` (the 'lesion'), a bright corner marker."""
    image = np.full((SIZE, SIZE), 0.25, np.float32) + rng.normal(0, 0.01, (SIZE, SIZE)).astype(np.float32)
    image[lung_mask()] = 0.45 + texture * rng.uniform(-1, 1, int(lung_mask().sum()))
    if marker:
        image[CORNER] = 0.95
    return np.clip(image, 0, 1)[..., None]


def write_dataset(root, per_class: int = 12, shortcut: bool = False, classes=("COVID", "Normal"),
                  masks: bool = True, seed: int = 0):
    """``<Class>/images`` (+ ``masks/``): COVID lungs are textured; with ``shortcut`` COVID films carry the marker."""
    rng = np.random.default_rng(seed)
    for index, name in enumerate(classes):
        (root / name / "images").mkdir(parents=True)
        if masks:
            (root / name / "masks").mkdir()
        for i in range(per_class):
            covid = name == "COVID"
            texture = rng.uniform(0.15, 0.3) if covid else rng.uniform(0.0, 0.08) * (index + 1)
            save_png(make_image(rng, texture, shortcut and covid), root / name / "images" / f"{name}-{i}.png")
            if masks:
                save_png(lung_mask().astype(np.uint8) * 255, root / name / "masks" / f"{name}-{i}.png")
    return root


def region_model(region: np.ndarray, *, texture: bool, scale: float, offset: float, n_classes: int = 2,
                 channels: int = 1) -> keras.Model:
    """A fixed-weight model: p(class 0) = sigmoid(scale * (feature - offset)); the feature is the mean over
    ``region`` of the image (``texture=False``) or of its absolute Laplacian (``texture=True``). Built-in layers
    only, so it loads in safe mode."""
    inputs = keras.Input((SIZE, SIZE, channels))
    x = inputs
    depth = channels
    if texture:
        laplacian = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)
        conv = keras.layers.Conv2D(2, 3, padding="same", use_bias=False, activation="relu")
        x = conv(x)
        kernel = np.zeros((3, 3, channels, 2), np.float32)
        kernel[:, :, 0, 0], kernel[:, :, 0, 1] = laplacian, -laplacian
        conv.set_weights([kernel])
        depth = 2
    pool = keras.layers.Conv2D(1, SIZE, padding="valid", use_bias=False)
    x = keras.layers.Flatten()(pool(x))
    indicator = np.zeros((SIZE, SIZE, depth, 1), np.float32)
    indicator[region, :, 0] = 1.0  # the texture model's two channels add up: |Laplacian| = relu(l) + relu(-l)
    pool.set_weights([indicator / region.sum()])
    dense = keras.layers.Dense(n_classes, activation="softmax")
    outputs = dense(x)
    kernel, bias = np.zeros((1, n_classes), np.float32), np.zeros(n_classes, np.float32)
    kernel[0, 0], bias[0] = scale, -scale * offset
    dense.set_weights([kernel, bias])
    return keras.Model(inputs, outputs)


def save_run(model: keras.Model, folder, classes=("COVID", "Normal"), roi: str = "none"):
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    (folder / "config.json").write_text(json.dumps({"class_names": list(classes), "roi": roi}))
    return folder / "model.keras"


def lung_texture_model() -> keras.Model:
    inner = cv2.erode(lung_mask().astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    return region_model(inner, texture=True, scale=40.0, offset=0.25)


def corner_model() -> keras.Model:
    corner = np.zeros((SIZE, SIZE), bool)
    corner[CORNER] = True
    return region_model(corner, texture=False, scale=30.0, offset=0.6)


# ---- fills and dilation on arrays with known answers ----------------------------------------------------------


def test_mean_fill_writes_the_image_mean_inside_the_mask_only():
    image = np.random.default_rng(0).random((20, 30, 1)).astype(np.float32)
    region = np.zeros((20, 30), bool)
    region[5:10, 5:15] = True
    filled = fills.fill_region(image, region, fills.fill_values(image, "mean"))
    np.testing.assert_allclose(filled[region], image.mean(), rtol=1e-6)
    np.testing.assert_array_equal(filled[~region], image[~region])


def test_blur_leaves_the_other_region_untouched_and_matches_opencv():
    rng = np.random.default_rng(1)
    image = rng.random((224, 200, 1)).astype(np.float32)
    mask = np.zeros((224, 200), bool)
    mask[60:160, 40:90] = True
    variants = fills.occlusion_images(image, mask, ["blur"], dilation=0.0)
    lungs_filled, outside_filled = variants[1], variants[2]
    np.testing.assert_array_equal(lungs_filled[~mask], image[~mask])  # outside untouched
    np.testing.assert_array_equal(outside_filled[mask], image[mask])  # lungs untouched
    sigma = fills.blur_sigma(image.shape)
    assert sigma == pytest.approx(0.08 * 224)
    exact = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)[..., None]
    assert np.abs(fills.strong_blur(image) - exact).max() < 2e-3  # the shrunk blur is the same image
    assert lungs_filled[mask].std() < 0.02 < image[mask].std()  # no texture left


def test_dilation_grows_the_filled_area():
    mask = np.zeros((100, 100), bool)
    mask[40:60, 40:60] = True
    areas = [int(fills.dilate(mask, d).sum()) for d in (0.0, 0.03, 0.08)]
    assert areas[0] == 400 and areas[0] < areas[1] < areas[2]
    assert fills.dilation_pixels(0.03, (100, 60)) == 3
    image = np.ones((100, 100, 1), np.float32)
    image[mask] = 0.0
    filled = fills.occlusion_images(image, mask, ["mean"], dilation=0.03)[1]
    assert int((filled != image).sum()) == areas[1]  # exactly the dilated lungs are written
    with pytest.raises(ValueError):
        fills.dilation_pixels(1.5, (10, 10))


def test_noise_fill_is_seeded_and_fills_parse():
    image = np.random.default_rng(2).random((16, 16, 1)).astype(np.float32)
    first = fills.fill_values(image, "noise", np.random.default_rng(5))
    np.testing.assert_array_equal(first, fills.fill_values(image, "noise", np.random.default_rng(5)))
    assert abs(first.mean() - image.mean()) < 0.1
    assert fills.parse_fills("mean, blur,mean") == ("mean", "blur")
    with pytest.raises(ValueError, match="unknown fill"):
        fills.parse_fills("mean,sharpen")
    assert len(fills.occlusion_images(image, image[..., 0] > 0.5, ["mean", "blur", "noise"], 0.0)) == 7


# ---- AUCs, verdict, figure ------------------------------------------------------------------------------------


def test_auc_results_are_sklearns_positive_vs_rest_with_paired_cis():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 90)
    scores = np.stack([rng.random(90) + (y == 1) * 0.5, rng.random(90)], axis=1)
    rows = occlusion_stats.auc_results(y, scores, 1, [("original", None), ("lungs_filled", "mean")], n_bootstrap=200)
    assert rows[0]["auc"] == pytest.approx(roc_auc_score(y == 1, scores[:, 0]))
    assert rows[1]["auc"] == pytest.approx(roc_auc_score(y == 1, scores[:, 1]))
    for row in rows:
        low, high = row["ci95"]
        assert low <= row["auc"] <= high and row["n"] == 90
    assert occlusion_stats.auc_results(y, scores, 1, [("original", None), ("x", "y")], n_bootstrap=0)[0]["ci95"] == [
        None, None]


def results(original, lungs, outside):
    entry = lambda auc: {"auc": auc, "ci95": [None, None], "n": 10}  # noqa: E731
    return {"original": entry(original), "lungs_filled": {f: entry(v) for f, v in zip(("mean", "blur"), lungs)},
            "outside_filled": {f: entry(v) for f, v in zip(("mean", "blur"), outside)}}


@pytest.mark.parametrize(("values", "label"), [
    ((0.95, (0.50, 0.60), (0.93, 0.96)), occlusion.DECIDES_FROM_LUNGS),
    ((0.95, (0.92, 0.90), (0.60, 0.70)), occlusion.SHORTCUTS),
    ((0.95, (0.85, 0.70), (0.90, 0.92)), occlusion.MIXED),  # lungs filled (blur) 0.70: neither
    ((0.95, (0.50, 0.60), (0.80, 0.96)), occlusion.MIXED),  # outside filled (mean) lost too much
    ((None, (0.5, 0.5), (0.5, 0.5)), occlusion.NO_VERDICT),
])
def test_verdict_says_its_thresholds(values, label):
    found, line = occlusion_stats.verdict(results(*values), "COVID")
    assert found == label and line.startswith(f"verdict: {label}") and "\n" not in line
    if label != occlusion.NO_VERDICT:
        assert "<= 0.65" in line and "original - 0.05" in line and ">= 0.80" in line


def test_figure_has_one_bar_per_variant_and_fill_and_a_chance_line(tmp_path):
    rows = [{"variant": "original", "fill": None, "auc": 0.9, "ci95": [0.85, 0.95]},
            {"variant": "lungs_filled", "fill": "blur", "auc": 0.55, "ci95": [0.45, 0.65]},
            {"variant": "outside_filled", "fill": "blur", "auc": None, "ci95": [None, None]}]
    figure = plot_occlusion(rows, auc_label="ROC-AUC of COVID", verdict="decides from the lungs", n=40,
                            path=tmp_path / "o.png")
    ax = figure.axes[0]
    assert len(ax.patches) == 2 and [t.get_text() for t in ax.get_yticklabels()] == [
        "original image", "lungs filled (blur)", "outside lungs filled (blur)"]
    assert any(list(line.get_xdata()) == [0.5, 0.5] for line in ax.get_lines())
    assert (tmp_path / "o.png").stat().st_size > 5000


def test_the_figure_of_a_saved_summary_has_the_same_bars():
    from covid_tf.figures.occlusion import plot_occlusion_summary

    summary = {"auc": "ROC-AUC of COVID", "verdict": "mixed", "n": 10,
               "thresholds": {"lungs_filled_max_auc": 0.6, "shortcut_auc": 0.9},
               "results": {"original": {"auc": 0.9, "ci95": [0.8, 1.0], "n": 10},
                           "lungs_filled": {"mean": {"auc": 0.7, "ci95": [0.6, 0.8], "n": 10},
                                            "blur": {"auc": 0.5, "ci95": [0.4, 0.6], "n": 10}},
                           "outside_filled": {"mean": {"auc": 0.85, "ci95": [0.7, 0.95], "n": 10}}}}
    ax = plot_occlusion_summary(summary).axes[0]
    assert len(ax.patches) == 4 and ax.get_yticklabels()[2].get_text() == "lungs filled (blur)"
    assert any(list(line.get_xdata()) == [0.6, 0.6] for line in ax.get_lines())  # the summary's own threshold


# ---- models whose decision we control -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shortcut_data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("occ") / "data", shortcut=True)


def test_a_lung_texture_model_decides_from_the_lungs(shortcut_data, tmp_path):
    model = save_run(lung_texture_model(), tmp_path / "lungrun")
    result = occlusion.run_occlusion(model, shortcut_data, tmp_path / "out", n_bootstrap=100)
    found = result.summary["results"]
    assert found["original"]["auc"] > 0.95, found
    assert found["lungs_filled"]["blur"]["auc"] <= 0.65 and found["lungs_filled"]["mean"]["auc"] <= 0.65
    assert found["outside_filled"]["mean"]["auc"] == pytest.approx(found["original"]["auc"], abs=0.02)
    assert result.label == occlusion.DECIDES_FROM_LUNGS


def test_a_corner_marker_model_is_caught(shortcut_data, tmp_path):
    model = save_run(corner_model(), tmp_path / "cornerrun")
    result = occlusion.run_occlusion(model, shortcut_data, tmp_path / "out", fills="mean,blur,noise",
                                     n_bootstrap=100)
    found = result.summary["results"]
    assert found["original"]["auc"] == 1.0
    assert all(entry["auc"] == 1.0 for entry in found["lungs_filled"].values())  # lungs filled: still 1.0
    assert result.label == occlusion.SHORTCUTS and "shortcuts outside the lungs" in result.line
    table = result.table
    assert list(table.columns[:6]) == ["path", "label", "lung_mask_source", "included", "reason", "p_COVID"]
    assert {f"shift_{v}_{f}" for v in ("lungs_filled", "outside_filled") for f in ("mean", "blur", "noise")} <= set(
        table.columns)
    assert (table["lung_mask_source"] == "dataset").all() and table["included"].all()
    covid = table["label"] == "COVID"
    assert (table.loc[covid, "p_COVID"] > 0.99).all() and (table.loc[~covid, "p_COVID"] < 0.01).all()
    assert (table.loc[covid, "shift_outside_filled_mean"] < -0.9).all()  # the marker filled away
    assert (table["shift_lungs_filled_blur"].abs() < 1e-3).all()  # the lungs do not matter to it


def test_multiclass_model_reports_positive_vs_rest(tmp_path):
    classes = ("COVID", "Normal", "Viral Pneumonia")
    data = write_dataset(tmp_path / "data", per_class=6, shortcut=True, classes=classes)
    corner = np.zeros((SIZE, SIZE), bool)
    corner[CORNER] = True
    model = save_run(region_model(corner, texture=False, scale=30.0, offset=0.6, n_classes=3), tmp_path / "run",
                     classes=classes)
    result = occlusion.run_occlusion(model, data, tmp_path / "out", fills=["blur"], n_bootstrap=50)
    saved = json.loads((tmp_path / "out" / "occlusion.json").read_text())
    assert saved["auc"] == "ROC-AUC of COVID vs rest" and saved["positive_class"] == "COVID"
    assert saved["results"]["lungs_filled"]["blur"]["auc"] == 1.0 and result.label == occlusion.SHORTCUTS


# ---- inputs: the attention model's mask channel, the ROI after filling ------------------------------------------


def test_attention_model_gets_the_original_mask_in_its_mask_channel(tmp_path):
    from covid_tf.models.registry import build_model

    model = build_model("baseline", image_size=32, channels=1, num_classes=2, lung_attention=True,
                        normalization="per_image")
    loaded = loaded_model(model, tmp_path / "model.keras", class_names=["COVID", "Normal"])
    assert loaded.roi.mask_input
    path = tmp_path / "x.png"
    save_png(make_image(np.random.default_rng(4), 0.2, True), path)
    save_png(lung_mask().astype(np.uint8) * 255, tmp_path / "m.png")
    loader = variants.FillLoader(loaded, {str(path): str(tmp_path / "m.png")}, ["mean", "blur"], 0.03)
    inputs = loader(str(path))
    assert inputs.shape == (5, 32, 32, 2)
    expected = roi_image(np.zeros((SIZE, SIZE, 1), np.float32), lung_mask(), loaded.roi, 32)[0][..., 1]
    for variant in inputs:
        np.testing.assert_array_equal(variant[..., 1], expected)  # the original mask, never the filled region
    assert not np.allclose(inputs[1, ..., 0], inputs[0, ..., 0]) and not np.allclose(inputs[3, ..., 0],
                                                                                     inputs[0, ..., 0])


def test_the_run_roi_is_applied_after_filling_the_full_image(tmp_path):
    model = keras.Sequential([keras.Input((24, 24, 1)), keras.layers.Flatten(), keras.layers.Dense(2, "softmax")])
    loaded = loaded_model(model, tmp_path / "model.keras", class_names=["COVID", "Normal"])
    loaded = dataclasses.replace(loaded, roi=RoiSpec("lungs-masked"))
    image = make_image(np.random.default_rng(5), 0.2, True)
    path, mask_path = tmp_path / "x.png", tmp_path / "m.png"
    save_png(image, path)
    big = cv2.resize(lung_mask().astype(np.uint8) * 255, (128, 128), interpolation=cv2.INTER_NEAREST)
    save_png(big, mask_path)  # a mask of another size than its image: resized
    inputs = variants.FillLoader(loaded, {str(path): str(mask_path)}, ["mean"], 0.03)(str(path))
    image = np.round(image * 255) / 255
    filled = fills.occlusion_images(image, lung_mask(), ["mean"], 0.03)
    for got, full in zip(inputs, filled):
        np.testing.assert_allclose(got, roi_image(full, lung_mask(), loaded.roi, 24)[0], atol=1e-5)


# ---- bad inputs and the command -------------------------------------------------------------------------------


def test_bad_inputs_give_one_clear_error(shortcut_data, tmp_path, capsys):
    model = save_run(corner_model(), tmp_path / "run")
    no_masks = write_dataset(tmp_path / "nomasks", per_class=3, masks=False)
    one_class = write_dataset(tmp_path / "one", per_class=3, classes=("COVID",))
    cases = [
        (["occlusion", str(model), str(no_masks), "--out", str(tmp_path / "o1"), "--no-segmenter"], "no lung masks"),
        (["occlusion", str(model), str(one_class), "--out", str(tmp_path / "o2")], "only one class"),
        (["occlusion", str(model), str(shortcut_data), "--out", str(shortcut_data / "o")], "inside the input folder"),
        (["occlusion", str(model), str(shortcut_data), "--out", str(tmp_path / "run")], "choose another"),
        (["occlusion", str(model), str(shortcut_data), "--out", str(tmp_path / "run" / "config.json")],
         "exists and is not a folder"),
        (["occlusion", str(model), str(shortcut_data), "--out", str(tmp_path / "o3"), "--fills", "sharpen"],
         "unknown fill"),
    ]
    for argv, reason in cases:
        assert main([*argv, "-q"]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and reason in err[0], err
    assert not (tmp_path / "o1").exists() and not (shortcut_data / "o").exists()
    unsafe = keras.Sequential([keras.Input((SIZE, SIZE, 1)), keras.layers.Lambda(lambda x: x * 1.0),
                               keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    save_run(unsafe, tmp_path / "unsafe")
    assert main(["occlusion", str(tmp_path / "unsafe" / "model.keras"), str(shortcut_data), "--out",
                 str(tmp_path / "o5"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Lambda" in err[0] and "--allow-unsafe" in err[0]
    with pytest.raises(CovidTfError, match="no lung masks"):
        occlusion.run_occlusion(model, no_masks, tmp_path / "o4", use_segmenter=False)


def test_command_writes_three_files_reports_an_unreadable_mask_and_prints_the_verdict(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", per_class=8, shortcut=True)
    broken = data / "Normal" / "masks" / "Normal-3.png"
    broken.write_bytes(b"not a png")
    model = save_run(corner_model(), tmp_path / "run")
    out = tmp_path / "out"
    argv = ["occlusion", str(model), str(data), "--out", str(out), "--n-bootstrap", "50", "-q"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    verdicts = [line for line in printed.splitlines() if line.startswith("verdict: ")]
    assert len(verdicts) == 1 and verdicts[0].startswith("verdict: shortcuts outside the lungs")
    assert "1 of 16 image(s) without plausible lungs left out" in printed and "mask unreadable" in printed
    assert {p.name for p in out.iterdir()} == set(occlusion.OUTPUT_FILES)
    saved = json.loads((out / "occlusion.json").read_text())
    assert saved["n"] == 15 and saved["n_left_out"] == 1 and "mask unreadable" in saved["left_out_examples"][0][
        "reason"]
    for variant in ("lungs_filled", "outside_filled"):
        for fill in ("mean", "blur"):
            entry = saved["results"][variant][fill]
            assert set(entry) == {"auc", "ci95", "n"} and len(entry["ci95"]) == 2 and entry["n"] == 15
    assert set(saved["results"]["original"]) == {"auc", "ci95", "n"}
    assert saved["dilation"] == 0.03 and saved["positive_class"] == "COVID" and "tensorflow" in str(saved["versions"])
    import pandas as pd

    table = pd.read_csv(out / "occlusion.csv")
    assert len(table) == 16 and (~table["included"]).sum() == 1
    assert table.loc[~table["included"], "p_COVID"].isna().all()
    assert main(argv) == 2 and "already holds an occlusion check" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def test_masks_are_checked_as_they_are_streamed_like_evaluate_checks_them(tmp_path, monkeypatch):
    """The check reads each mask once, in the stream: a segmenter's implausible mask (one blob) and a dataset's
    empty mask are left out with prepare_masks's own reasons, the rest scored as if checked beforehand; when no
    image has plausible lungs, one clear error."""
    from covid_tf.lungs.roi.mask_table import cache_key, prepare_masks

    monkeypatch.setattr(occlusion_config, "CACHE_DIR", tmp_path / "cache")
    data = write_dataset(tmp_path / "data", per_class=6, shortcut=True)
    save_png(np.zeros((SIZE, SIZE), np.uint8), data / "COVID" / "masks" / "COVID-0.png")  # the dataset's, empty
    moved = data / "Normal" / "masks" / "Normal-1.png"  # this image's mask comes from the segmenter's cache
    blob = np.zeros((SIZE, SIZE), np.uint8)
    blob[10:54, 10:54] = 255  # one component: not a plausible pair of lungs
    cache = tmp_path / "cache" / "lung_masks"
    cache.mkdir(parents=True)
    save_png(blob, cache / f"{cache_key(data / 'Normal' / 'images' / 'Normal-1.png')}.png")
    moved.unlink()
    model = save_run(corner_model(), tmp_path / "run")
    result = occlusion.run_occlusion(model, data, tmp_path / "out", n_bootstrap=0)
    table = result.table.set_index("path")
    expected = prepare_masks(list(table.index), use_segmenter=True, cache_dir=cache).set_index("path")
    assert table["lung_mask_source"].equals(expected["lung_mask_source"])
    assert table["included"].tolist() == expected["roi_applied"].tolist()
    assert table.loc[~table["included"], "reason"].tolist() == expected.loc[~expected["roi_applied"], "reason"].tolist()
    assert (~table["included"]).sum() == 2 and "expected 2" in " ".join(table["reason"])
    assert result.summary["n"] == 10 and table.loc[table["included"], "p_COVID"].notna().all()
    again = occlusion.run_occlusion(model, data, tmp_path / "again", n_bootstrap=0, use_segmenter=False)
    assert again.summary["n"] == 10 and again.summary["lung_mask_sources"] == {"dataset": 11, "none": 1}
    image, mask = data / "COVID" / "images" / "COVID-2.png", data / "COVID" / "masks" / "COVID-2.png"
    loader = variants.FillLoader(load_model(model), {str(image): str(mask)}, ["mean", "blur"], 0.03)
    assert loader.checked(str(image))[1] == ""
    image.write_bytes(image.read_bytes()[:120])  # broken after the data was indexed: left out, with the reason
    inputs, reason = loader.checked(str(image))
    assert reason.startswith("image unreadable") and not inputs.any()
    for mask in data.rglob("masks/*.png"):
        save_png(np.zeros((SIZE, SIZE), np.uint8), mask)
    with pytest.raises(CovidTfError, match="none of the 11 image"):  # the broken image is skipped when indexed
        occlusion.run_occlusion(model, data, tmp_path / "none", n_bootstrap=0)


def test_a_trained_run_with_a_lung_crop_goes_through(tmp_path):
    from covid_tf.runs.config import TrainConfig
    from covid_tf.workflows.train import train_run

    data = write_dataset(tmp_path / "data", per_class=12, shortcut=True)
    cfg = TrainConfig(data=str(data), image_size=32, epochs=1, batch_size=8, n_bootstrap=10, precise_bn_images=0,
                      roi="lungs", split_fractions=(0.5, 0.25, 0.25))
    train_run(cfg, tmp_path / "run", verbose=0, figures=False)
    loaded = load_model(tmp_path / "run" / "model.keras")
    assert loaded.roi.mode == "lungs"
    result = occlusion.run_occlusion(tmp_path / "run" / "model.keras", data, tmp_path / "out",
                                     split_file=tmp_path / "run" / "split.csv", subset="test", n_bootstrap=20)
    assert result.summary["roi"] == "lungs" and result.summary["subset"] == "test"
    assert 0 < result.summary["n"] < 24 and (tmp_path / "out" / "occlusion.png").is_file()


@pytest.mark.slow
def test_a_model_trained_on_a_burned_in_marker_is_caught(tmp_path):
    """A full-image model trained where every COVID film carries the synthetic side marker (outside the lungs) and
    the lesions are faint: with its lungs filled it still separates the classes."""
    from covid_tf.runs.config import TrainConfig
    from covid_tf.synthetic.xray import generate_dataset
    from covid_tf.workflows.train import train_run

    generate_dataset(tmp_path / "data", classes=("COVID", "Normal"), per_class=60, size=48, seed=1, difficulty=0.9,
                     shortcut_class="COVID", shortcut_probability=1.0)
    cfg = TrainConfig(data=str(tmp_path / "data"), image_size=48, epochs=6, batch_size=16, n_bootstrap=10,
                      precise_bn_images=0, roi="none", split_fractions=(0.6, 0.15, 0.25))
    train_run(cfg, tmp_path / "run", verbose=0, figures=False)
    result = occlusion.run_occlusion(tmp_path / "run" / "model.keras", tmp_path / "data", tmp_path / "out",
                                     split_file=tmp_path / "run" / "split.csv", subset="test", n_bootstrap=100)
    found = result.summary["results"]
    assert found["original"]["auc"] >= 0.9, found
    assert all(entry["auc"] >= occlusion.SHORTCUT_AUC for entry in found["lungs_filled"].values()), found
    assert result.label == occlusion.SHORTCUTS


def test_an_unknown_modality_is_one_clear_error_before_anything_is_read(tmp_path):
    with pytest.raises(CovidTfError, match="--modality: unknown 'mri'"):
        occlusion.run_occlusion(tmp_path / "missing.keras", tmp_path / "nowhere", tmp_path / "out", modality="mri")
    assert not (tmp_path / "out").exists()


def test_the_options_of_both_checks_are_checked_once_at_construction():
    from covid_tf.workflows import stress
    from covid_tf.workflows.checks import check_counts

    assert occlusion.OcclusionOptions(fills="mean,blur").fills == ("mean", "blur")
    assert occlusion.OcclusionOptions(fills=["blur"]).fills == ("blur",)
    assert stress.StressOptions(shifts="gamma:0.5").shifts == {"gamma": (0.5,)}
    for build, message in ((lambda: occlusion.OcclusionOptions(n_bootstrap=-1), "--n-bootstrap"),
                           (lambda: stress.StressOptions(batch_size=0), "--batch-size"),
                           (lambda: occlusion.OcclusionOptions(fills="paint"), "unknown fill"),
                           (lambda: stress.StressOptions(max_images=1), "--max-images"),
                           (lambda: check_counts(4, -2), "--n-bootstrap")):
        with pytest.raises(CovidTfError, match=message):
            build()

"""Lung-attention pooling (``train --roi lungs-attention``): the mask channel, the masked average, Grad-CAM
on the lungs only, portability, and a run that evaluate, predict and explain feed by themselves."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from covid_tf.data.images import resize_image
from covid_tf.errors import CovidTfError
from covid_tf.lungs.roi import inputs as ri
from covid_tf.lungs.roi import mask_table
from covid_tf.models import lung_attention
from covid_tf.models.registry import build_model, last_conv_layer_name
from covid_tf.runs.config import TrainConfig


def _two_lungs(size: int = 40) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[10:30, 6:16] = True
    mask[10:30, 24:34] = True
    return mask


def test_attention_input_is_the_full_image_plus_its_mask():
    image = np.random.default_rng(0).random((40, 40, 1)).astype(np.float32)
    mask = _two_lungs()
    spec = ri.RoiSpec("lungs-attention", margin=0.1)
    data, box = ri.roi_image(image, mask, spec, 24)
    assert data.shape == (24, 24, 2) and box == (0, 0, 40, 40)
    np.testing.assert_allclose(data[..., :1], resize_image(image, 24))  # neither cropped nor masked
    expected = resize_image(mask[..., None].astype(np.float32), 24)[..., 0]
    np.testing.assert_allclose(data[..., 1], expected)
    assert data[..., 1].max() == 1.0 and data[..., 1].min() == 0.0
    whole, box = ri.roi_image(image, None, spec, 24)  # no plausible lungs: whole image, pooled everywhere
    assert box == (0, 0, 40, 40) and (whole[..., 1] == 1.0).all()
    loader = ri.RoiLoader(spec, mask_table.prepare_masks([], use_segmenter=False), 24, 1)
    assert loader.channels == 2


def test_masked_average_is_the_mean_over_the_mask_and_area_is_no_cue():
    features = keras.Input((4, 4, 3))
    mask = keras.Input((16, 16, 1))
    pooled = keras.Model([features, mask], lung_attention.masked_average(features, mask))
    rng = np.random.default_rng(1)
    values = rng.random((2, 4, 4, 3)).astype(np.float32)
    masks = np.zeros((2, 16, 16, 1), np.float32)
    masks[0, :8, :8] = 1.0  # one feature cell block of 2 x 2
    masks[1, :, :12] = 1.0  # 4 x 3 cells
    out = np.asarray(pooled([values, masks]))
    np.testing.assert_allclose(out[0], values[0, :2, :2].mean(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(out[1], values[1, :, :3].mean(axis=(0, 1)), rtol=1e-5)
    constant = np.ones((2, 4, 4, 3), np.float32)
    np.testing.assert_allclose(np.asarray(pooled([constant, masks])), 1.0, rtol=1e-5)  # any area: the same


@pytest.mark.parametrize("name", ["baseline", "small"])
def test_grad_cam_of_an_attention_model_lies_in_the_lungs(name):
    from covid_tf.explain import explain

    keras.utils.set_random_seed(0)
    model = build_model(name, image_size=64, channels=1, num_classes=2, lung_attention=True,
                        normalization="per_image")
    assert model.inputs[0].shape[-1] == 2 and lung_attention.image_channels(model) == 1
    assert last_conv_layer_name(model) == lung_attention.LAYER_NAME
    x = np.random.default_rng(2).random((3, 64, 64, 2)).astype(np.float32)
    x[..., 1] = 0.0
    x[:, 16:48, 8:24, 1] = 1.0
    x[:, 16:48, 40:56, 1] = 1.0
    heatmaps, _, _ = explain(model, x, method="gradcam", class_index=0)
    far = np.ones((64, 64), bool)
    far[8:56, 0:32] = far[8:56, 32:64] = False  # more than one feature cell away from the lungs
    assert heatmaps.sum() > 0 and heatmaps[:, far].max() == 0.0


def test_attention_model_loads_in_plain_keras(tmp_path):
    model = build_model("baseline", image_size=32, channels=1, num_classes=2, lung_attention=True,
                        normalization="per_image")
    path = tmp_path / "attention.keras"
    model.save(path)
    x = np.random.default_rng(3).random((2, 32, 32, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.asarray(model(x)))
    code = ("import sys, numpy as np, keras\n"
            "m = keras.saving.load_model(sys.argv[1])\n"
            "assert 'covid_tf' not in sys.modules\n"
            "y = np.asarray(m(np.load(sys.argv[2])))\n"
            "print(float(np.abs(y - np.load(sys.argv[3])).max()))\n")
    done = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                          capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip().splitlines()[-1]) < 1e-5


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
    from covid_tf.synthetic.xray import generate_dataset

    root = tmp_path_factory.mktemp("attention_data") / "data"
    generate_dataset(root, classes=["COVID", "Normal"], per_class=6, size=48, seed=5, overwrite=True)
    return root


@pytest.fixture(scope="module")
def attention_run(synthetic_data, tmp_path_factory):
    from covid_tf.runs.config import TrainConfig
    from covid_tf.workflows.train import train_run

    run_dir = tmp_path_factory.mktemp("attention_run") / "run"
    cfg = TrainConfig(data=str(synthetic_data), image_size=32, epochs=1, batch_size=4, n_bootstrap=20,
                      precise_bn_images=0, roi="lungs-attention")
    train_run(cfg, run_dir, verbose=0)
    return run_dir


def test_attention_run_is_recorded_and_applied_by_predict_and_explain(attention_run, synthetic_data, tmp_path):
    from covid_tf.runs.inference import load_model
    from covid_tf.workflows.explain import explain_images

    saved = json.loads((attention_run / "config.json").read_text())
    assert saved["roi"] == "lungs-attention" and saved["channels"] == 1
    loaded = load_model(attention_run / "model.keras")
    assert loaded.channels == 1 and loaded.roi.mask_input
    paths = sorted(str(p) for p in (synthetic_data / "COVID" / "images").glob("*.png"))
    probabilities = loaded.predict_paths(paths)
    assert probabilities.shape == (6, 2) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # A copy of model.keras without its config.json is still fed its mask channel.
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(attention_run / "model.keras", alone / "model.keras")
    bare = load_model(alone / "model.keras", class_names=loaded.class_names)
    assert bare.roi.mask_input and bare.channels == 1
    np.testing.assert_allclose(bare.predict_paths(paths), probabilities, atol=1e-5)
    result = explain_images(attention_run / "model.keras", [synthetic_data / "COVID" / "images"], tmp_path / "x",
                            class_name="COVID")
    # Pooled over the lungs only (an all-zero map of this one-epoch model is NaN): at 32 px the 8 x 8 map's
    # cells on the lungs' outline still spill some heat when drawn at full size.
    measured = result.table["lung_energy_ratio"].dropna()
    assert len(measured) >= 2 and (measured > 1.5).all() and result.table["energy_in_lungs"].mean() > 0.5



def test_attention_models_report_the_backbone_layers_lung_energy_beside_the_pooled_one(attention_run, synthetic_data,
                                                                                        tmp_path):
    """The pooled layer's Grad-CAM is in the lungs by construction; the backbone's own last conv layer is measured
    too, named as such, by explain and by evaluate --lungs."""
    from covid_tf.models.registry import backbone_layer_name
    from covid_tf.runs.inference import load_model
    from covid_tf.workflows.evaluate import evaluate_model
    from covid_tf.workflows.explain import explain_images

    loaded = load_model(attention_run / "model.keras")
    layer = backbone_layer_name(loaded.model)
    assert layer != lung_attention.LAYER_NAME and layer == last_conv_layer_name(build_model("baseline"))
    result = explain_images(attention_run / "model.keras", [synthetic_data / "COVID" / "images"], tmp_path / "x",
                            class_name="COVID")
    assert result.backbone_layer == layer
    backbone = result.table["backbone_energy_in_lungs"].dropna()
    assert len(backbone) >= 2 and backbone.between(0.0, 1.0).all()
    evaluation = evaluate_model(attention_run / "model.keras", synthetic_data, tmp_path / "eval", n_bootstrap=10,
                                lungs=False)
    energy = evaluation.metrics["lung_energy"]
    assert energy["layer"] == lung_attention.LAYER_NAME and energy["backbone"]["layer"] == layer
    assert energy["backbone"]["n"] >= 1


class EmptySegmenter:
    """A stand-in segmenter that never finds lungs (as on CT slices or photographs)."""

    def __call__(self, batch, training=False):
        return np.zeros((*batch.shape[:3], 1), np.float32)


def test_auto_roi_is_lung_attention_only_where_lungs_are_found(synthetic_data, tmp_path):
    paths = sorted(str(p) for p in synthetic_data.glob("*/images/*.png"))
    mode, note = ri.resolve_auto(paths, seed=0)  # the dataset's own masks
    assert mode == "lungs-attention" and "100%" in note
    loose = tmp_path / "loose"
    loose.mkdir()
    copies = [str(shutil.copy(p, loose / f"x{i}.png")) for i, p in enumerate(paths[:5])]
    mode, note = ri.resolve_auto(copies, seed=0, segmenter=EmptySegmenter(), cache_dir=tmp_path / "cache")
    assert mode == "none" and "0% of 5" in note and "--roi none" in note
    with pytest.raises(CovidTfError, match="not resolved"):
        _ = TrainConfig(data=str(tmp_path), roi="auto").roi_spec
    assert TrainConfig(data=str(tmp_path), roi="auto", roi_resolved="none").roi_spec.mode == "none"


def test_train_command_defaults_to_auto_and_records_its_choice(synthetic_data, tmp_path):
    from covid_tf.cli import main

    run_dir = tmp_path / "run"
    code = main(["train", str(synthetic_data), "--out", str(run_dir), "--image-size", "32", "--epochs", "1",
                 "--batch-size", "4", "--precise-bn-images", "0", "-q"])
    assert code in (0, None)
    saved = json.loads((run_dir / "config.json").read_text())
    assert (saved["roi"], saved["roi_resolved"]) == ("auto", "lungs-attention")
    assert saved["roi_background"] == 0.5  # auto's lung attention randomises half the backgrounds
    from covid_tf.runs.inference import load_model

    loaded = load_model(run_dir / "model.keras")
    assert loaded.roi.mask_input and loaded.model.inputs[0].shape[-1] == 2


def test_score_cam_masks_the_image_channels_only():
    from covid_tf.explain import explain
    from covid_tf.explain.methods import ScoreCAM

    keras.utils.set_random_seed(0)
    model = build_model("baseline", image_size=32, channels=1, num_classes=2, lung_attention=True,
                        normalization="per_image")
    x = np.random.default_rng(4).random((2, 32, 32, 2)).astype(np.float32)
    x[..., 1] = 0.0
    x[:, 8:24, 4:14, 1] = 1.0
    x[:, 8:24, 18:28, 1] = 1.0
    factors = np.random.default_rng(5).random((3, 32, 32, 1)).astype(np.float32)
    perturbed = np.asarray(ScoreCAM(model)._perturb(x[:1], factors))
    assert perturbed.shape == (3, 32, 32, 2)
    np.testing.assert_allclose(perturbed[..., 0], x[:1, ..., 0] * factors[..., 0], rtol=1e-6)
    np.testing.assert_allclose(perturbed[..., 1], np.repeat(x[:1, ..., 1], 3, axis=0))  # the mask is kept
    heatmaps, _, _ = explain(model, x, method="scorecam", class_index=0)
    far = np.ones((32, 32), bool)
    far[4:28, :] = False
    assert heatmaps[:, far].max() == 0.0

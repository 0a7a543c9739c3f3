"""Saved models load in plain Keras: a process that never imports covid_tf loads every architecture and loss."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from covid_tf import models
from covid_tf.lungs.segmentation.segmenter import SHIPPED_MODEL
from covid_tf.training.losses import get_loss

SIZE = 32
LOSSES = ("ce", "weighted", "focal")
# Loads every model in a plain interpreter, predicts the same batch, and proves covid_tf was never imported.
LOADER = """
import json, sys
import keras, numpy as np
jobs = json.loads(sys.argv[1])
for model_path, images_path, out_path in jobs:
    model = keras.saving.load_model(model_path, compile=False)
    np.save(out_path, np.asarray(model(np.load(images_path), training=False)))  # eager: no predict trace
assert 'covid_tf' not in sys.modules, sorted(m for m in sys.modules if m.startswith('covid_tf'))
print('plain-keras-ok')
"""


def _plain_python(jobs: list[tuple[str, str, str]], cwd: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
    return subprocess.run([sys.executable, "-c", LOADER, json.dumps(jobs)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _models_to_save() -> list[tuple[str, dict]]:
    cases = [(name, {}) for name in models.ARCHITECTURES]
    # Normalisations that used custom layers before: per-image standardisation and VGG16's caffe on RGB input.
    return [*cases, ("baseline", {"normalization": "per_image"}), ("vgg16", {"channels": 3})]


@pytest.mark.slow
def test_every_architecture_and_loss_loads_without_covid_tf(tmp_path: Path) -> None:
    """Each architecture is saved and loaded once (the losses take turns); every loss is also saved on the
    cheap baseline, whose files must then hold the same config.json whatever the loss: the loss leaves no
    trace in the file, so one load per architecture covers every architecture x loss pair."""
    jobs, expected, configs = [], {}, {}
    for index, (name, options) in enumerate(_models_to_save()):
        channels = options.get("channels", 1)
        model = models.build_model(name, image_size=SIZE, weights=None, **options)
        images = np.random.default_rng(index).random((2, SIZE, SIZE, channels)).astype("float32")
        np.save(tmp_path / f"images{index}.npy", images)
        predictions = np.asarray(model(images, training=False))
        losses = LOSSES if index == 0 else (LOSSES[index % len(LOSSES)],)
        for loss in losses:
            model.compile(optimizer="adam", loss=get_loss(loss, [3, 5]), metrics=["accuracy"])
            path = tmp_path / f"{name}{index}_{loss}.keras"
            models.save_model(model, path)
            with zipfile.ZipFile(path) as archive:
                saved_config = archive.read("config.json").decode()
            assert "covid_tf" not in saved_config and not json.loads(saved_config).get("compile_config")
            configs.setdefault(index, set()).add(saved_config)
            out = tmp_path / f"{path.stem}.npy"
            jobs.append((str(path), str(tmp_path / f"images{index}.npy"), str(out)))
            expected[str(out)] = predictions
    assert _models_to_save()[0][0] == "baseline" and len(configs[0]) == 1, "the loss changed the saved file"
    assert {loss for *_, out in jobs for loss in LOSSES if out.endswith(f"_{loss}.npy")} == set(LOSSES)
    segmenter_images = np.random.default_rng(9).random((1, 64, 64, 1)).astype("float32")
    np.save(tmp_path / "segmenter_images.npy", segmenter_images)
    segmenter_out = tmp_path / "segmenter.npy"
    jobs.append((str(SHIPPED_MODEL), str(tmp_path / "segmenter_images.npy"), str(segmenter_out)))

    result = _plain_python(jobs, tmp_path)
    assert result.returncode == 0 and "plain-keras-ok" in result.stdout, result.stderr[-3000:]
    for out, predictions in expected.items():
        np.testing.assert_allclose(np.load(out), predictions, rtol=1e-4, atol=1e-5)
    shipped = np.asarray(keras.saving.load_model(SHIPPED_MODEL, compile=False)(segmenter_images, training=False))
    np.testing.assert_allclose(np.load(segmenter_out), shipped, rtol=1e-4, atol=1e-5)


def test_vgg16_caffe_normalization_is_a_frozen_builtin_conv() -> None:
    model = models.build_model("vgg16", image_size=SIZE, channels=3)
    layer = model.get_layer("normalization")
    assert type(layer) is keras.layers.Conv2D and not layer.trainable
    models.unfreeze_top(model, "all")
    assert not layer.trainable, "fine-tuning must not train the fixed RGB->BGR conv"
    red = np.zeros((1, 1, 1, 3), np.float32)
    red[..., 0] = 1.0
    np.testing.assert_allclose(np.asarray(layer(red)).ravel(), [-103.939, -116.779, 255 - 123.68], atol=1e-3)

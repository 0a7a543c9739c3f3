"""Models load with Keras safe mode on; a Lambda layer (arbitrary code) needs an explicit opt-in."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from covid_tf.cli import COMMANDS, main
from covid_tf.errors import CovidTfError
from covid_tf.models.loading import load_keras_model
from covid_tf.models.registry import build_model
from tests.helpers import make_class_folders


def _lambda_model(path):
    inputs = keras.Input((32, 32, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0 - 1.0, name="code_on_load")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.save(path)
    return model


def test_plain_model_loads_in_safe_mode(tmp_path):
    model = build_model("baseline", image_size=32, channels=1, num_classes=2, dropout=0.0)
    model.save(tmp_path / "plain.keras")
    loaded = load_keras_model(tmp_path / "plain.keras")
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_lambda_layer_is_refused_unless_allow_unsafe(tmp_path):
    path = tmp_path / "lambda.keras"
    model = _lambda_model(path)
    with pytest.raises(CovidTfError, match="Lambda.*--allow-unsafe") as caught:
        load_keras_model(path)
    assert str(path) in str(caught.value)
    loaded = load_keras_model(path, allow_unsafe=True)
    x = np.full((1, 32, 32, 1), 0.5, dtype="float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_not_a_model_is_a_clear_error(tmp_path):
    fake = tmp_path / "fake.keras"
    fake.write_text("not a zip archive")
    with pytest.raises(CovidTfError, match="not a Keras 3 model file"):
        load_keras_model(fake)
    with pytest.raises(CovidTfError, match="model file not found"):
        load_keras_model(tmp_path / "missing.keras")


@pytest.mark.parametrize("command", ["predict", "evaluate", "explain"])
def test_cli_refuses_lambda_models_and_allow_unsafe_opts_in(tmp_path, capsys, command):
    if command not in COMMANDS:
        pytest.skip(f"the {command!r} command is not registered yet")
    path = tmp_path / "lambda.keras"
    _lambda_model(path)
    data = make_class_folders(tmp_path / "data", {"class_0": 2, "class_1": 2}, size=32)
    inputs = [str(data)] if command == "evaluate" else [str(data / "class_0")]
    argv = [command, str(path), *inputs, "--out", str(tmp_path / "out")]
    if command == "predict":
        argv[-1] = str(tmp_path / "out.csv")
    if command == "evaluate":
        argv += ["--n-bootstrap", "0"]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Lambda" in err and "--allow-unsafe" in err
    assert main([*argv, "--allow-unsafe"]) == 0, capsys.readouterr().err


def test_legacy_layers_load_without_being_registered_by_an_import(tmp_path):
    """Files of 0.1.0 name their normalisation layers ``covid_tf>PerImageStandardization`` and
    ``covid_tf>CaffeNormalization``: the loader hands Keras the classes, no import registers them."""
    import json
    import zipfile

    from covid_tf.data import preprocessing

    assert keras.saving.get_registered_object("covid_tf>PerImageStandardization") is None
    inputs = keras.Input((16, 16, 3))
    x = preprocessing.CaffeNormalization()(preprocessing.PerImageStandardization()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x)))
    model.save(tmp_path / "saved.keras")
    path = tmp_path / "legacy.keras"
    with zipfile.ZipFile(tmp_path / "saved.keras") as saved, zipfile.ZipFile(path, "w") as legacy:
        for entry in saved.infolist():
            content = saved.read(entry)
            if entry.filename == "config.json":  # as the registered classes of 0.1.0 were written
                content = json.dumps(json.loads(content), separators=(",", ":"))
                for name in ("PerImageStandardization", "CaffeNormalization"):
                    content = content.replace(f'"registered_name":"{name}"', f'"registered_name":"covid_tf>{name}"')
                assert content.count('"covid_tf>') == 2
            legacy.writestr(entry, content)
    loaded = load_keras_model(path)
    x = np.random.default_rng(0).random((2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert keras.saving.get_registered_object("covid_tf>CaffeNormalization") is None

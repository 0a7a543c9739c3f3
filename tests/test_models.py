"""Model builders, Grad-CAM's layer after save/load, freezing, and the offline ImageNet error."""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.legacy.saving import legacy_h5_format

from covid_tf import models
from covid_tf.errors import CovidTfError
from covid_tf.training import losses

SIZE = 32
BATCH = 2
HEAVY = {"resnet50v2", "vgg16"}
ARCHITECTURES = [
    pytest.param(name, marks=pytest.mark.slow) if name in HEAVY else name for name in models.model_names()
]


def _batch(channels: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.random((BATCH, SIZE, SIZE, channels), dtype=np.float32)
    labels = np.eye(2, dtype=np.float32)[[0, 1]]
    return images, labels


def _compile(model: keras.Model) -> keras.Model:
    """Eager: one step's check without tracing a train function (30 s of the ResNet50V2 case; `fit`'s graph
    path is trained for real by test_train, test_portable_models and the notebooks)."""
    model.compile(
        optimizer=losses.get_optimizer("adam", 1e-3),
        loss=losses.get_loss("weighted", [3, 2]),
        metrics=["accuracy"],
        run_eagerly=True,
    )
    return model


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_build_train_save_load_and_gradcam_layer(name, tmp_path):
    model = _compile(models.build_model(name, image_size=SIZE, channels=1))
    images, labels = _batch()
    assert model.input_shape == (None, SIZE, SIZE, 1)
    assert model.output_shape == (None, 2)

    head_before = model.get_layer("predictions").get_weights()[0].copy()
    loss = model.train_on_batch(images, labels)
    assert np.isfinite(np.ravel(loss)[0])
    assert not np.allclose(model.get_layer("predictions").get_weights()[0], head_before)

    predictions = model.predict(images, verbose=0)
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, rtol=1e-5)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path, custom_objects=losses.custom_objects())  # registered where it loads
    np.testing.assert_allclose(loaded.predict(images, verbose=0), predictions, rtol=1e-5, atol=1e-6)
    assert isinstance(loaded.loss, losses.WeightedCategoricalCrossentropy)

    layer_name = models.last_conv_layer_name(loaded)
    assert layer_name == models.get_architecture(name).last_conv_layer
    grad_model = keras.Model(loaded.inputs, [loaded.get_layer(layer_name).output, loaded.output])
    with tf.GradientTape() as tape:
        feature_maps, outputs = grad_model([images])
        class_score = outputs[:, 1]
    gradients = tape.gradient(class_score, feature_maps)
    assert len(feature_maps.shape) == 4
    assert gradients is not None and gradients.shape == feature_maps.shape
    assert np.all(np.isfinite(gradients.numpy()))
    np.testing.assert_allclose(np.asarray(outputs), predictions, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["baseline", "small", "resnet18"])
def test_rgb_input_and_larger_images(name):
    model = models.build_model(name, image_size=64, channels=3, num_classes=4, dropout=0.0)
    images = np.random.default_rng(1).random((BATCH, 64, 64, 3), dtype=np.float32)
    predictions = model.predict(images, verbose=0)
    assert predictions.shape == (BATCH, 4)
    assert "head_dropout" not in {layer.name for layer in model.layers}


def test_grayscale_is_repeated_to_three_channels_for_backbones():
    model = models.build_model("resnet18", image_size=SIZE, channels=1)
    assert model.get_layer("grayscale_to_rgb").output.shape[-1] == 3
    assert model.get_layer("conv1_conv").kernel.shape == (7, 7, 3, 64)
    rgb = models.build_model("resnet18", image_size=SIZE, channels=3)
    assert "grayscale_to_rgb" not in {layer.name for layer in rgb.layers}
    # The from-scratch CNN keeps one channel unless its normalisation needs RGB.
    baseline = models.build_model("baseline", image_size=SIZE, channels=1)
    assert baseline.get_layer("block1_conv1").kernel.shape[2] == 1
    imagenet = models.build_model("baseline", image_size=SIZE, channels=1, normalization="imagenet")
    assert imagenet.get_layer("block1_conv1").kernel.shape[2] == 3


def test_normalization_choices():
    dataset = models.build_model("baseline", image_size=SIZE, mean=0.53, std=0.25)
    images, _ = _batch()
    normalised = keras.Model(dataset.inputs[0], dataset.get_layer("normalization").output)(images)
    np.testing.assert_allclose(np.asarray(normalised), (images - 0.53) / 0.25, rtol=1e-4, atol=1e-5)
    resnet = models.build_model("resnet18", image_size=SIZE, normalization="resnet_v2")
    scaled = keras.Model(resnet.inputs[0], resnet.get_layer("normalization").output)(images)
    np.testing.assert_allclose(np.asarray(scaled)[..., 0], images[..., 0] * 2 - 1, atol=1e-6)
    with pytest.raises(ValueError, match="both mean and std"):
        models.build_model("baseline", image_size=SIZE, mean=0.5)
    with pytest.raises(ValueError, match="only used by normalization 'dataset'"):
        models.build_model("baseline", image_size=SIZE, mean=0.5, std=0.2, normalization="per_image")
    with pytest.raises(ValueError, match="unknown normalization"):
        models.build_model("baseline", image_size=SIZE, normalization="zscore")


def test_invalid_arguments():
    with pytest.raises(CovidTfError, match="unknown model 'resnet34'"):
        models.build_model("resnet34")
    with pytest.raises(ValueError, match="image_size"):
        models.build_model("baseline", image_size=16)
    with pytest.raises(ValueError, match="channels"):
        models.build_model("baseline", image_size=SIZE, channels=2)
    with pytest.raises(ValueError, match="num_classes"):
        models.build_model("baseline", image_size=SIZE, num_classes=1)
    with pytest.raises(CovidTfError, match="not found"):
        models.build_model("resnet18", image_size=SIZE, weights="/nonexistent/resnet18.weights.h5")


def test_last_conv_layer_name_of_other_models():
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Conv2D(4, 3, name="c1")(inputs)
    x = keras.layers.Conv2D(4, 3, name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    assert models.last_conv_layer_name(keras.Model(inputs, outputs, name="custom")) == "c2"
    dense_only = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(CovidTfError, match="no layer with a 4-D"):
        models.last_conv_layer_name(dense_only)


def test_grad_cam_and_fine_tuning_share_one_last_conv_layer_search():
    from covid_tf.explain import base

    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Rescaling(2.0, name="scale")(inputs)
    x = keras.layers.Conv2D(4, 3, name="c1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Reshape((1, 1, 4), name="back_to_4d")(x)  # after pooling: not a feature map
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs, name="custom")
    assert base.find_target_layer(model) == base.default_target_layer(model) == models.last_conv_layer_name(model)
    assert models.last_conv_layer_name(model) == "c1"
    registered = models.build_model("small", image_size=SIZE)
    assert base.find_target_layer(registered) == models.get_architecture("small").last_conv_layer
    # Only a preprocessing layer is 4-D: both refuse, with the same message.
    flat = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Rescaling(1.0)(inputs))))
    with pytest.raises(CovidTfError, match="no layer with a 4-D output") as from_models:
        models.last_conv_layer_name(flat)
    with pytest.raises(ValueError, match="no layer with a 4-D output") as from_explain:
        base.find_target_layer(flat)
    assert str(from_models.value) == str(from_explain.value)


@pytest.mark.parametrize("name", ["resnet50v2", "vgg16"])
def test_offline_imagenet_download_names_the_file_to_fetch(name, monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras.utils, "get_file", offline)
    expected = tmp_path / "models" / f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with pytest.raises(CovidTfError) as error:
        models.build_model(name, image_size=SIZE, weights="imagenet")
    assert str(expected) in str(error.value)
    assert "storage.googleapis.com" in str(error.value)


def test_resnet18_has_no_keras_imagenet_weights():
    with pytest.raises(CovidTfError, match=r"no pretrained ResNet18 ImageNet weights.*\.weights\.h5"):
        models.build_model("resnet18", image_size=SIZE, weights="imagenet")


def test_resnet18_loads_a_local_backbone_weights_file(tmp_path):
    backbone = models.resnet18_backbone((SIZE, SIZE, 3))
    path = tmp_path / "resnet18.weights.h5"
    backbone.save_weights(path)
    model = models.build_model("resnet18", image_size=SIZE, channels=1, weights=str(path))
    for layer_name in ("conv1_conv", "conv5_block2_2_conv", "conv5_block2_2_bn"):
        saved = backbone.get_layer(layer_name).get_weights()
        for loaded_weight, saved_weight in zip(model.get_layer(layer_name).get_weights(), saved):
            np.testing.assert_array_equal(loaded_weight, saved_weight)


@pytest.mark.slow
def test_cached_keras_notop_file_is_used_without_download(monkeypatch, tmp_path):
    # A legacy-format file under Keras' own cache name stands in for the real ImageNet weights.
    backbone = keras.applications.VGG16(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    path = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, backbone)
    requested = []

    def cached(fname, *args, **kwargs):
        requested.append(fname)
        return str(path)

    monkeypatch.setattr(keras.utils, "get_file", cached)
    model = models.build_model("vgg16", image_size=SIZE, channels=1, weights="imagenet")
    assert requested == [path.name]
    expected = backbone.get_layer("block5_conv3").kernel
    np.testing.assert_array_equal(model.get_layer("block5_conv3").kernel, expected)
    # The same file can also be given as a path.
    again = models.build_model("vgg16", image_size=SIZE, channels=3, weights=str(path))
    expected = backbone.get_layer("block1_conv1").kernel
    np.testing.assert_array_equal(again.get_layer("block1_conv1").kernel, expected)


def _trainable_names(model: keras.Model) -> set[str]:
    return {weight.path for weight in model.trainable_weights}


def test_freeze_then_unfreeze_resnet18_counts_and_batchnorm():
    model = models.build_model("resnet18", image_size=SIZE, dropout=0.0)
    conv_kernels = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(conv_kernels) == 20  # stem + 8 blocks x 2 + 3 projection shortcuts
    assert [name for name, _ in models.backbone_blocks(model)][:2] == ["stem", "conv2_block1"]
    assert len(models.backbone_blocks(model)) == 9

    models.freeze_backbone(model)
    assert len(model.trainable_weights) == 2  # the softmax layer's kernel and bias
    assert all(name.startswith("predictions/") for name in _trainable_names(model))

    models.unfreeze_top(model, 1)  # conv5_block2: two convs without bias
    assert len(model.trainable_weights) == 2 + 2
    models.unfreeze_top(model, 2)  # + conv5_block1: two convs and the projection shortcut
    assert len(model.trainable_weights) == 2 + 5
    models.unfreeze_top(model, "all")
    assert len(model.trainable_weights) == 2 + 20
    batch_norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert batch_norms
    assert not any(layer.trainable for layer in batch_norms)
    models.unfreeze_top(model, 100)
    assert len(model.trainable_weights) == 2 + 20
    with pytest.raises(ValueError, match="n_blocks"):
        models.unfreeze_top(model, -1)


def test_frozen_backbone_does_not_change_during_training():
    model = models.freeze_backbone(models.build_model("resnet18", image_size=SIZE))
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    kernel = model.get_layer("conv1_conv").kernel.numpy().copy()
    moving_mean = model.get_layer("conv1_bn").moving_mean.numpy().copy()
    head = model.get_layer("predictions").kernel.numpy().copy()
    images, labels = _batch()
    model.train_on_batch(images, labels)
    np.testing.assert_array_equal(model.get_layer("conv1_conv").kernel.numpy(), kernel)
    np.testing.assert_array_equal(model.get_layer("conv1_bn").moving_mean.numpy(), moving_mean)
    assert not np.allclose(model.get_layer("predictions").kernel.numpy(), head)


def test_unfreeze_resnet50v2_top_block():
    model = models.build_model("resnet50v2", image_size=SIZE)
    blocks = models.backbone_blocks(model)
    assert len(blocks) == 17  # stem + 3 + 4 + 6 + 3 residual blocks
    assert "post_relu" in {layer.name for layer in blocks[-1][1]}
    models.freeze_backbone(model)
    assert len(model.trainable_weights) == 4  # head_dense1 and predictions
    models.unfreeze_top(model, 1)
    # conv5_block3: 1x1 and 3x3 convs without bias, the last 1x1 conv with bias; BN stays frozen.
    assert len(model.trainable_weights) == 4 + 4
    assert not model.get_layer("post_bn").trainable


def test_freezing_works_on_a_loaded_model(tmp_path):
    path = tmp_path / "baseline.keras"
    models.build_model("baseline", image_size=SIZE).save(path)
    model = keras.models.load_model(path)
    models.freeze_backbone(model)
    assert _trainable_names(model) == {
        "head_dense1/kernel", "head_dense1/bias", "predictions/kernel", "predictions/bias"
    }
    models.unfreeze_top(model, 1)
    assert {"block3_conv1/kernel", "block3_conv2/kernel"} <= _trainable_names(model)
    assert "block3_bn2/gamma" not in _trainable_names(model)  # batch norm stays frozen, as the guide says
    assert "block2_conv2/kernel" not in _trainable_names(model)


def _no_network(*args, **kwargs):
    raise AssertionError("the test tried to reach the network")


def _write_keras_notop_file(keras_home, name: str, application) -> keras.Model:
    """A backbone with random weights saved as Keras' cached ImageNet file (legacy .h5, Keras' own name)."""
    backbone = application(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    # A constant first kernel cannot come from the random initialisation of the model being built.
    first = next(layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D))
    first.kernel.assign(np.full(first.kernel.shape, 0.125, dtype="float32"))
    path = keras_home / "models" / f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, backbone)
    return backbone


@pytest.mark.slow
def test_auto_weights_load_the_cached_keras_file_without_network(monkeypatch, tmp_path, capsys):
    from covid_tf.models import transfer

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras.utils, "get_file", _no_network)
    monkeypatch.setattr(transfer, "can_download", _no_network)
    backbone = _write_keras_notop_file(tmp_path, "resnet50v2", keras.applications.ResNet50V2)
    assert transfer.resolve_weights("resnet50v2", "auto") == "imagenet"
    model = models.build_model("resnet50v2", image_size=SIZE, channels=1, weights="auto")
    assert np.all(model.get_layer("conv1_conv").get_weights()[0] == 0.125)
    for layer_name in ("conv1_conv", "conv5_block3_3_conv", "post_bn"):
        saved = backbone.get_layer(layer_name).get_weights()
        for loaded_weight, saved_weight in zip(model.get_layer(layer_name).get_weights(), saved):
            np.testing.assert_array_equal(loaded_weight, saved_weight)
    assert "random backbone" not in capsys.readouterr().out
    # weights="imagenet" takes the cached file as it is too (Keras would re-download a file of another hash).
    assert transfer.imagenet_weights_path("resnet50v2") == tmp_path / "models" / backbone_file("resnet50v2")


def backbone_file(name: str) -> str:
    return f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5"


@pytest.mark.parametrize(("offline", "reason"), [("1", "COVID_TF_OFFLINE is set"), ("0", "cannot be reached")])
def test_auto_weights_offline_say_in_one_line_that_the_backbone_is_random(monkeypatch, tmp_path, offline, reason):
    from covid_tf.models import transfer

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("COVID_TF_OFFLINE", offline)
    monkeypatch.setattr(keras.utils, "get_file", _no_network)
    monkeypatch.setattr(transfer, "can_download", lambda url: False)  # no connection is attempted
    lines = []
    assert transfer.resolve_weights("resnet50v2", "auto", say=lines.append) is None
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith("resnet50v2: random backbone, no ImageNet weights (offline")
    assert reason in lines[0] and str(tmp_path / "models") in lines[0] and "--weights PATH" in lines[0]


def test_auto_weights_download_when_the_server_answers(monkeypatch, tmp_path):
    from covid_tf.models import transfer

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("COVID_TF_OFFLINE", "0")
    monkeypatch.setattr(transfer, "can_download", lambda url: True)
    fetched = []

    def download(fname, origin, cache_dir, cache_subdir, file_hash):  # stands in for Keras' download
        fetched.append(origin)
        target = tmp_path / "models" / fname
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"weights")
        return str(target)

    monkeypatch.setattr(keras.utils, "get_file", download)
    lines = []
    assert transfer.resolve_weights("vgg16", "auto", say=lines.append) == "imagenet"
    assert fetched == [transfer.BACKBONES["vgg16"].weights_url] and lines == []


def test_auto_weights_leave_other_choices_alone(monkeypatch):
    from covid_tf.models import transfer

    monkeypatch.setattr(transfer, "can_download", _no_network)
    lines = []
    for name in ("baseline", "lenet"):  # trained from scratch: random, quietly (resnet18: test_seed_recipes)
        assert transfer.resolve_weights(name, "auto", say=lines.append) is None
    assert transfer.resolve_weights("resnet50v2", None, say=lines.append) is None
    assert transfer.resolve_weights("resnet50v2", "w.h5", say=lines.append) == "w.h5"
    assert lines == []
    assert models.build_model("baseline", image_size=SIZE, weights="auto").name == "covid_baseline"


def test_train_command_defaults_to_auto_weights(tmp_path):
    from covid_tf.cli import build_parser
    from covid_tf.cli.commands.train import config_from_args

    parser = build_parser("train")
    args = parser.parse_args(["train", str(tmp_path), "--out", str(tmp_path / "run"), "--model", "resnet50v2"])
    assert config_from_args(args).weights == "auto"
    args = parser.parse_args(["train", str(tmp_path), "--out", "x", "--model", "resnet50v2", "--weights", "none"])
    assert config_from_args(args).weights is None

"""CAM family on tiny models whose answer is known, sanity check and deletion score."""

from __future__ import annotations

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from covid_tf import explain as cam
from covid_tf.errors import CovidTfError

METHODS = ["cam", "gradcam", "gradcam++", "scorecam", "layercam"]


def square_model(size: int, channels: int = 1) -> keras.Model:
    """A fixed-weight model whose class 1 is "a bright region is present".

    A 1x1 convolution splits pixels into a bright channel ``relu(x - 0.5)`` and a dark channel
    ``relu(0.5 - x)``; after pooling, class 1 reads the bright channel (weight 100) and class 0 the
    dark one (weight 2). On images that are bright only in the top-left square, every method must put
    class 1's heat there and class 0's heat outside it.
    """
    inputs = keras.Input((size, size, channels))
    features = layers.Conv2D(2, 1, activation="relu", name="detect")(inputs)
    features = layers.MaxPooling2D(4, name="pool")(features)
    pooled = layers.GlobalAveragePooling2D(name="gap")(features)
    outputs = layers.Dense(2, activation="softmax", name="head")(pooled)
    model = keras.Model(inputs, outputs, name="square")
    kernel = np.zeros((1, 1, channels, 2), np.float32)
    kernel[..., 0], kernel[..., 1] = 1.0 / channels, -1.0 / channels
    model.get_layer("detect").set_weights([kernel, np.array([-0.5, 0.5], np.float32)])
    model.get_layer("head").set_weights(
        [np.array([[0.0, 100.0], [2.0, 0.0]], np.float32), np.zeros(2, np.float32)]
    )
    return model


def square_images(count: int, size: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Dim noise with a bright square in the top-left quarter (aligned to the 4-pixel pooling grid)."""
    images = np.random.default_rng(seed).uniform(0.0, 0.2, (count, size, size, channels)).astype(np.float32)
    images[:, : size // 4, : size // 4] = 1.0
    return images


def small_cnn(size: int = 32, channels: int = 1, seed: int = 1) -> keras.Model:
    """A random functional CNN with normalisation, BatchNorm and a GAP -> Dense head."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, channels))
    x = layers.Rescaling(2.0, offset=-1.0)(inputs)
    x = layers.Conv2D(8, 3, padding="same", name="conv1")(x)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.Activation("relu", name="relu1")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(3, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def flatten_model(size: int) -> keras.Model:
    """A fixed-weight model with a Flatten head whose class 1 reads only the top-left quarter.

    One 1x1 convolution detects bright pixels (``relu(x - 0.5)``); after a 4x4 max pooling the feature
    map is flattened and class 1's logit sums the positions of the top-left quarter only (weight 1),
    every other position has weight 0. Each position has its own weight, as in the baseline CNN.
    """
    inputs = keras.Input((size, size, 1))
    features = layers.Conv2D(1, 1, activation="relu", name="detect")(inputs)
    features = layers.MaxPooling2D(4, name="pool")(features)
    outputs = layers.Dense(2, activation="softmax", name="head")(layers.Flatten()(features))
    model = keras.Model(inputs, outputs, name="flatten_head")
    model.get_layer("detect").set_weights([np.ones((1, 1, 1, 1), np.float32), np.array([-0.5], np.float32)])
    grid = size // 4
    region = np.zeros((grid, grid), np.float32)
    region[: grid // 4, : grid // 4] = 1.0
    kernel = np.stack([np.zeros(grid * grid, np.float32), region.reshape(-1)], axis=1)
    model.get_layer("head").set_weights([kernel, np.zeros(2, np.float32)])
    return model


def two_square_images(count: int, size: int, seed: int = 0) -> np.ndarray:
    """A dimmer square in the top-left quarter (the region the class reads) and a brighter one in the
    bottom-right quarter (which the class ignores), on dim noise."""
    images = np.random.default_rng(seed).uniform(0.0, 0.2, (count, size, size, 1)).astype(np.float32)
    images[:, : size // 4, : size // 4] = 0.8
    images[:, -(size // 4) :, -(size // 4) :] = 1.0
    return images


def random_images(count: int, size: int = 32, channels: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, (count, size, size, channels)).astype(np.float32)


def check_maps(heatmaps: np.ndarray, count: int, size: int) -> None:
    assert heatmaps.shape == (count, size, size)
    assert heatmaps.dtype == np.float32
    assert np.isfinite(heatmaps).all()
    assert heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("size", [32, 48])
def test_map_peaks_where_the_evidence_is(method: str, batch_size: int, size: int) -> None:
    model, images = square_model(size), square_images(3, size)
    heatmaps, classes, probabilities = cam.explain(model, images, method=method, batch_size=batch_size)
    check_maps(heatmaps, 3, size)
    assert classes.tolist() == [1, 1, 1]
    assert probabilities.shape == (3, 2) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    quarter = size // 4
    for heatmap in heatmaps:
        row, column = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        assert row < quarter and column < quarter
        assert heatmap[:quarter, :quarter].mean() > 0.7
        assert heatmap[size // 2 :, size // 2 :].max() < 0.1


@pytest.mark.parametrize("method", METHODS)
def test_explicit_class_index_per_image(method: str) -> None:
    model, images = square_model(32), square_images(3, 32, channels=1)
    heatmaps, classes, _ = cam.explain(model, images, method=method, class_index=[1, 0, 1])
    check_maps(heatmaps, 3, 32)
    assert classes.tolist() == [1, 0, 1]
    inside, outside = (heatmaps[:, :8, :8].mean(axis=(1, 2)), heatmaps[:, 16:, 16:].mean(axis=(1, 2)))
    assert inside[0] > outside[0] and inside[2] > outside[2]
    # Class 0 ("dark") lives outside the bright square.
    assert outside[1] > 0.5 > inside[1]
    all_class_0 = cam.explain(model, images, method=method, class_index=0)[0]
    np.testing.assert_allclose(all_class_0[1], heatmaps[1], atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_rgb_input(method: str) -> None:
    heatmaps, classes, _ = cam.explain(square_model(32, 3), square_images(2, 32, channels=3), method=method)
    check_maps(heatmaps, 2, 32)
    assert classes.tolist() == [1, 1]
    assert np.argmax(heatmaps[0]) // 32 < 8


@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_one_image_at_a_time(method: str) -> None:
    model, images = small_cnn(), random_images(5)
    explainer = cam.get_explainer(method, model, batch_size=2)
    batched, batched_classes, batched_probabilities = explainer.explain(images)
    single = [explainer.explain(image[np.newaxis]) for image in images]
    np.testing.assert_allclose(batched, np.concatenate([one[0] for one in single]), atol=1e-4)
    assert batched_classes.tolist() == [int(one[1][0]) for one in single]
    np.testing.assert_allclose(batched_probabilities, np.concatenate([one[2] for one in single]), atol=1e-5)
    check_maps(batched, 5, 32)
    assert batched.max(axis=(1, 2)).min() > 0.99  # each map is stretched to reach 1


@pytest.mark.parametrize("method", METHODS)
def test_constant_model_gives_zero_maps_not_nan(method: str) -> None:
    model = small_cnn()
    head = model.get_layer("head")
    head.set_weights([np.zeros_like(weight) for weight in head.get_weights()])
    # Score-CAM without a baseline weighs every channel 1/3 here (the paper's maps are then the summed
    # activations); its "increase of confidence" over a black image is 0 for every channel.
    explainer = (cam.ScoreCAM(model, subtract_baseline=True) if method == "scorecam"
                 else cam.get_explainer(method, model))
    heatmaps, _, probabilities = explainer.explain(random_images(2))
    np.testing.assert_allclose(probabilities, 1.0 / 3.0, atol=1e-6)
    check_maps(heatmaps, 2, 32)
    assert not heatmaps.any()


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_gradient_methods_agree_with_cam_on_a_linear_head(method: str) -> None:
    """Here only the bright channel gets a positive weight from either method, so the maps coincide.

    (On a GlobalAveragePooling head a channel's gradient is the same at every position, so LayerCAM is
    Grad-CAM without the negative channels.)
    """
    model, images = square_model(32), square_images(2, 32)
    np.testing.assert_allclose(
        cam.explain(model, images, method)[0], cam.explain(model, images, "cam")[0], atol=1e-3
    )


@pytest.mark.parametrize("size", [32, 48])
def test_layercam_finds_the_region_a_flatten_head_reads(size: int) -> None:
    """With a Flatten head the class reads one region; Grad-CAM averages the gradient over space and
    lights up every bright square (most of all the brighter one, which the class ignores), LayerCAM
    keeps the gradient per position and lights up only the region the class reads."""
    model, images = flatten_model(size), two_square_images(3, size)
    quarter = size // 4
    layercam, classes, probabilities = cam.explain(model, images, method="layercam")
    check_maps(layercam, 3, size)
    assert classes.tolist() == [1, 1, 1] and probabilities[:, 1].min() > 0.7
    for heatmap in layercam:
        row, column = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        assert row < quarter and column < quarter
        assert heatmap[:quarter, :quarter].mean() > 0.7
        assert heatmap[-quarter:, -quarter:].max() < 0.1
    gradcam = cam.explain(model, images, method="gradcam")[0]
    for heatmap in gradcam:
        row, column = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        assert row >= size - quarter and column >= size - quarter  # the square the class ignores


def test_per_pixel_weights_outside_the_graph() -> None:
    """The (N, h, w, K) weights hook also works for a method whose weights are computed in NumPy."""

    class NumpyLayerCAM(cam.BaseCAM):
        weights_in_graph = False

        def compute_weights(self, activations, gradients, images, class_indices):
            return np.maximum(np.asarray(gradients), 0.0)

    model, images = flatten_model(32), two_square_images(2, 32)
    np.testing.assert_allclose(
        NumpyLayerCAM(model)(images), cam.get_explainer("layercam", model)(images), atol=1e-5
    )


def test_default_layer_and_cam_head() -> None:
    model = small_cnn()
    assert cam.find_target_layer(model) == "conv2"
    assert cam.get_explainer("gradcam", model).layer_name == "conv2"
    assert cam.get_explainer("cam", model).layer_name == "conv2"
    assert cam.get_explainer("GradCAM++", model, layer_name="relu1").layer_name == "relu1"
    with pytest.raises(ValueError, match="reads the layer that feeds the pooling"):
        cam.get_explainer("cam", model, layer_name="relu1")
    with pytest.raises(ValueError, match="no layer named"):
        cam.get_explainer("gradcam", model, layer_name="missing")
    with pytest.raises(ValueError, match="4-D"):
        cam.get_explainer("gradcam", model, layer_name="head")
    with pytest.raises(ValueError, match="unknown explanation method"):
        cam.get_explainer("lime", model)


def test_cam_refuses_a_hidden_dense_head_that_gradcam_explains() -> None:
    inputs = keras.Input((32, 32, 1))
    x = layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(128, activation="relu", name="hidden")(x)
    x = layers.Dropout(0.5)(x)
    model = keras.Model(inputs, layers.Dense(2, activation="softmax")(x))
    with pytest.raises(ValueError, match="hidden Dense layer 'hidden'"):
        cam.get_explainer("cam", model)
    check_maps(cam.explain(model, random_images(2), "gradcam")[0], 2, 32)


def test_model_without_feature_maps_is_refused() -> None:
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(
        inputs, layers.Dense(2, activation="softmax")(layers.Flatten()(layers.Rescaling(1.0)(inputs)))
    )
    with pytest.raises(ValueError, match="no layer with a 4-D output"):
        cam.find_target_layer(model)


def test_sequential_model() -> None:
    model = keras.Sequential(
        [
            keras.Input((32, 32, 1)),
            layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(2, activation="softmax"),
        ]
    )
    for method in ("cam", "gradcam"):
        explainer = cam.get_explainer(method, model)
        assert explainer.layer_name == "conv"
        check_maps(explainer(random_images(2)), 2, 32)


def test_bad_inputs_are_refused() -> None:
    explainer = cam.get_explainer("gradcam", square_model(32))
    images = square_images(2, 32)
    with pytest.raises(ValueError, match="float"):
        explainer.explain((images * 255).astype(np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        explainer.explain(images * 255)
    with pytest.raises(ValueError, match="class_index"):
        explainer.explain(images, class_index=2)
    with pytest.raises(ValueError, match="one per image"):
        explainer.explain(images, class_index=[0, 1, 1])
    heatmaps, classes, _ = explainer.explain(images[0])  # one (H, W, C) image
    assert heatmaps.shape == (1, 32, 32) and classes.tolist() == [1]
    with pytest.raises(ValueError, match=r"do not fit the input \(None, 32, 32, 1\)"):
        explainer.explain(square_images(2, 48))


@pytest.mark.parametrize("method", ["cam", "gradcam"])
def test_model_loaded_from_keras_file_explains_the_same(tmp_path, method: str) -> None:
    model, images = small_cnn(), random_images(3)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        cam.explain(loaded, images, method)[0], cam.explain(model, images, method)[0], atol=1e-5
    )


def edge_detector(model: keras.Model, images: np.ndarray, class_indices: np.ndarray) -> np.ndarray:
    """An "explainer" that ignores the model: the Sobel gradient magnitude of the image."""
    maps = []
    for image in images[..., 0]:
        magnitude = np.hypot(cv2.Sobel(image, cv2.CV_32F, 1, 0), cv2.Sobel(image, cv2.CV_32F, 0, 1))
        maps.append(magnitude / (magnitude.max() + 1e-7))
    return np.stack(maps)


def test_sanity_check_flags_a_method_that_ignores_the_weights() -> None:
    model, images = square_model(32), square_images(4, 32)
    edges = cam.randomization_sanity_check(model, images, method=edge_detector, seed=0)
    assert edges["mean_correlation"] > 0.99
    assert edges["passed"] is False
    assert edges["class_indices"] == [1, 1, 1, 1]
    # The original model is left unchanged.
    assert model.get_layer("head").get_weights()[0][0, 1] == 100.0
    # Grad-CAM of a CNN with eight 3x3 channels changes completely with random weights. (The square
    # model's two 1x1 channels are too simple: any random weights give the square or its complement.)
    gradcam = cam.randomization_sanity_check(small_cnn(), random_images(4), method="gradcam", seed=0)
    assert len(gradcam["correlations"]) == 4
    assert abs(gradcam["mean_correlation"]) < 0.5 and gradcam["passed"] is True


def test_cascading_randomisation_goes_from_the_top() -> None:
    result = cam.randomization_sanity_check(
        small_cnn(), random_images(2), method="gradcam", seed=3, mode="cascading"
    )
    assert [step["layer"] for step in result["cascade"]] == ["head", "conv2", "bn1", "conv1"]
    assert result["mean_correlation"] == result["cascade"][-1]["mean_correlation"]
    with pytest.raises(ValueError, match="mode"):
        cam.randomization_sanity_check(small_cnn(), random_images(1), mode="partial")


def test_rank_correlation_handles_ties_and_constants() -> None:
    first = np.array([0.0, 0.0, 1.0, 2.0, 2.0, 3.0])
    second = np.array([1.0, 1.0, 2.0, 2.0, 5.0, 6.0])
    stats = pytest.importorskip("scipy.stats")
    assert cam.rank_correlation(first, second) == pytest.approx(stats.spearmanr(first, second).statistic)
    assert cam.rank_correlation(first, -first) == pytest.approx(-1.0)
    assert cam.rank_correlation(np.zeros(4), np.zeros(4)) == 1.0
    assert cam.rank_correlation(np.zeros(4), np.arange(4.0)) == 0.0


@pytest.mark.parametrize(("fill", "least_drop"), [("mean", 0.5), (0.0, 0.5), ("blur", 0.1)])
def test_deletion_of_the_hot_region_drops_the_probability(fill, least_drop: float) -> None:
    model, images = square_model(32), square_images(2, 32)
    heatmaps, classes, _ = cam.explain(model, images, "gradcam")
    score = cam.deletion_score(model, images[0], heatmaps[0], int(classes[0]), fraction=0.1, fill=fill)
    assert score["probability"] > 0.85
    # A blurred bright square stays partly bright, so blurring removes less evidence than filling.
    assert score["drop"] > least_drop
    assert abs(score["random_drop"]) < 0.05
    assert score["drop_over_random"] > least_drop - 0.05
    rows = cam.summarize(
        heatmaps,
        masks=[np.pad(np.ones((8, 8), bool), ((0, 24), (0, 24))), None],
        model=model,
        images=images,
        class_indices=classes,
        fraction=0.1,
    )
    assert rows[0]["pointing_game"] == 1.0 and rows[0]["energy_in_mask"] > 0.8
    assert np.isnan(rows[1]["iou"]) and rows[1]["drop"] > 0.5


@pytest.mark.parametrize("architecture", ["small", "resnet18"])
def test_project_models_explain_with_their_own_layer(architecture: str) -> None:
    """The models package's builders are flat, so every method reaches their last conv layer."""
    models = pytest.importorskip("covid_tf.models")
    model = models.build_model(architecture, image_size=32, channels=1, num_classes=3)
    explainer = cam.get_explainer("gradcam", model)
    assert explainer.layer_name == models.last_conv_layer_name(model)
    heatmaps, classes, probabilities = explainer.explain(random_images(2))
    check_maps(heatmaps, 2, 32)
    assert probabilities.shape == (2, 3) and classes.shape == (2,)


def softmax_layer_model(size: int = 32, seed: int = 1) -> keras.Model:
    """``small_cnn`` with its softmax as a separate layer: the logits are the output Dense's output."""
    fused = small_cnn(size, seed=seed)
    features = fused.get_layer("conv2").output
    x = layers.GlobalAveragePooling2D()(features)
    logits = layers.Dense(3, name="logits")(x)
    model = keras.Model(fused.inputs, layers.Softmax()(logits), name="separate_softmax")
    model.get_layer("logits").set_weights(fused.get_layer("head").get_weights())
    return model


@pytest.mark.parametrize("class_index", [0, 1, 2])
def test_gradcam_equals_cam_on_a_pooling_head(class_index: int) -> None:
    """On GAP -> Dense the logit gradient of channel k is W[k, c] / (h w) everywhere: Grad-CAM is CAM.

    (With the probability as the score this identity fails: the gradient also subtracts the other
    classes' weights.)"""
    model, images = small_cnn(), random_images(4)
    cam_maps = cam.explain(model, images, "cam", class_index=class_index)[0]
    assert cam_maps.max() > 0.99  # a non-trivial map for every image
    np.testing.assert_allclose(cam.explain(model, images, "gradcam", class_index=class_index)[0], cam_maps,
                               atol=1e-5)
    probability_maps = cam.explain(model, images, "gradcam", class_index=class_index, score="probability")[0]
    assert np.abs(probability_maps - cam_maps).max() > 0.05


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam"])
def test_gradient_methods_differentiate_the_logit(tmp_path, method: str) -> None:
    """A softmax fused into the Dense (replayed to get the logit), a separate Softmax layer (the
    logit is a layer output) and the fused model loaded back from .keras give the same maps."""
    fused, separate, images = small_cnn(), softmax_layer_model(), random_images(3)
    assert cam.find_logit_layer(fused).name == "head" and cam.find_logit_layer(separate).name == "logits"
    expected = cam.get_explainer(method, separate, layer_name="conv2")(images, 1)
    np.testing.assert_allclose(cam.get_explainer(method, fused)(images, 1), expected, atol=1e-5)
    fused.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(cam.get_explainer(method, loaded)(images, 1), expected, atol=1e-5)
    explainer = cam.get_explainer(method, fused, score="probability")
    assert explainer.score == "probability"
    assert not np.allclose(explainer(images, 1), expected, atol=1e-3)


def test_logit_needs_a_dense_output_and_a_known_score() -> None:
    inputs = keras.Input((16, 16, 1))
    features = layers.Conv2D(2, 3, activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, layers.Softmax()(layers.GlobalAveragePooling2D()(features)))
    with pytest.raises(ValueError, match="score='probability'"):
        cam.get_explainer("gradcam", model)
    check_maps(cam.get_explainer("gradcam", model, score="probability")(random_images(2, 16)), 2, 16)
    check_maps(cam.get_explainer("scorecam", model)(random_images(2, 16)), 2, 16)  # needs no logit
    with pytest.raises(ValueError, match="score must be one of"):
        cam.get_explainer("gradcam", small_cnn(), score="logits")


def reference_score_cam(model: keras.Model, layer_name: str, image: np.ndarray, class_index: int,
                        subtract_baseline: bool = False) -> np.ndarray:
    """Score-CAM written out as in Wang et al.'s official code: one masked forward pass per channel."""
    feature_maps = keras.Model(model.inputs[0], model.get_layer(layer_name).output)(image[np.newaxis]).numpy()[0]
    height, width = image.shape[:2]
    baseline = float(model(np.zeros_like(image)[np.newaxis])[0, class_index]) if subtract_baseline else 0.0
    saliency = np.zeros((height, width), np.float64)
    for channel in range(feature_maps.shape[-1]):
        upsampled = tf.image.resize(feature_maps[np.newaxis, :, :, channel, np.newaxis], (height, width),
                                    method="bilinear").numpy()[0, :, :, 0]
        if upsampled.max() == upsampled.min():
            continue
        mask = (upsampled - upsampled.min()) / (upsampled.max() - upsampled.min())
        probability = float(model(image[np.newaxis] * mask[np.newaxis, :, :, np.newaxis])[0, class_index])
        saliency += (probability - baseline) * upsampled
    saliency = np.maximum(saliency, 0.0)
    return (saliency - saliency.min()) / (saliency.max() - saliency.min() + 1e-12)


@pytest.mark.parametrize("subtract_baseline", [False, True])
def test_score_cam_matches_the_official_definition(subtract_baseline: bool) -> None:
    model, images = small_cnn(), random_images(3, seed=5)
    explainer = cam.ScoreCAM(model, layer_name="conv2", batch_size=5, subtract_baseline=subtract_baseline)
    heatmaps, classes, _ = explainer.explain(images)
    for heatmap, image, class_index in zip(heatmaps, images, classes):
        reference = reference_score_cam(model, "conv2", image, int(class_index), subtract_baseline)
        assert reference.max() > 0.99
        assert np.corrcoef(heatmap.ravel(), reference.ravel())[0, 1] > 0.99


def one_image_score_cam(model: keras.Model, layer_name: str, image: np.ndarray, class_index: int,
                        subtract_baseline: bool = False) -> np.ndarray:
    """Score-CAM of one image, one masked forward pass per channel as the official code weighs the channels,
    combined as every explainer combines (weighted sum, ReLU, bilinear upsampling, min-max)."""
    maps = keras.Model(model.inputs[0], model.get_layer(layer_name).output)(image[np.newaxis]).numpy()[0]
    baseline = float(model(np.zeros_like(image)[np.newaxis])[0, class_index]) if subtract_baseline else 0.0
    weights = np.zeros(maps.shape[-1], np.float32)
    for channel in range(maps.shape[-1]):
        upsampled = tf.image.resize(maps[np.newaxis, :, :, channel, np.newaxis], image.shape[:2]).numpy()[0, :, :, 0]
        if upsampled.max() > upsampled.min():
            mask = (upsampled - upsampled.min()) / (upsampled.max() - upsampled.min())
            weights[channel] = float(model(image[np.newaxis] * mask[np.newaxis, :, :, np.newaxis])[0, class_index])
            weights[channel] -= baseline
    cam_map = tf.image.resize(np.maximum(maps @ weights, 0.0)[np.newaxis, :, :, np.newaxis], image.shape[:2])
    cam_map = cam_map.numpy()[0, :, :, 0] - cam_map.numpy().min()
    return cam_map / cam_map.max()


@pytest.mark.parametrize("subtract_baseline", [False, True])
def test_batched_score_cam_equals_one_image_at_a_time(subtract_baseline: bool) -> None:
    """Every image and channel of a batch in one traced graph (masked images 5 at a time, across images) gives
    the numbers of the one-image, one-channel-at-a-time loop."""
    model, images = small_cnn(), random_images(4, seed=3)
    explainer = cam.ScoreCAM(model, layer_name="conv2", batch_size=5, subtract_baseline=subtract_baseline)
    heatmaps, classes, _ = explainer.explain(images)
    for heatmap, image, class_index in zip(heatmaps, images, classes):
        expected = one_image_score_cam(model, "conv2", image, int(class_index), subtract_baseline)
        np.testing.assert_allclose(heatmap, expected, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_each_explainer_is_traced_once(method: str) -> None:
    """Batches of any size (a ragged last one too) reuse the one traced graph: no retracing per batch."""
    explainer = cam.get_explainer(method, small_cnn(), batch_size=3)
    for count in (3, 1, 7, 2):
        check_maps(explainer(random_images(count, seed=count)), count, 32)
    assert explainer._explain_graph.experimental_get_tracing_count() == 1


def test_the_method_table_is_what_the_cli_and_the_explainers_accept(monkeypatch) -> None:
    import argparse

    from covid_tf.cli.commands import explain as command
    from covid_tf.explain import cam_methods

    assert list(cam.METHODS) == list(cam_methods.CAM_METHODS)
    assert all(cam.METHODS[name].__name__ == explainer for name, explainer in cam_methods.CAM_METHODS.items())
    assert isinstance(cam.get_explainer("GradCAM_PlusPlus", small_cnn()), cam.GradCAMPlusPlus)
    monkeypatch.setitem(cam_methods.CAM_METHODS, "newcam", "GradCAM")  # a new row: the command accepts it at once
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert parser.parse_args(["model.keras", "x.png", "--out", "o", "--method", "newcam"]).method == "newcam"


def test_quality_table_gives_cam_its_own_layer(tmp_path) -> None:
    """A method that reads its own layer (``layer_fixed``: CAM) is not handed the layer chosen for the others."""
    from covid_tf.data.discover import discover
    from covid_tf.studies.shortcuts import quality_table
    from covid_tf.synthetic.xray import generate_dataset

    generate_dataset(tmp_path / "data", classes=("COVID", "Normal"), per_class=2, size=32, seed=1)
    frame = discover(tmp_path / "data").frame
    table = quality_table(small_cnn(), frame, ["COVID", "Normal", "Other"], methods=("gradcam", "cam"),
                          layer_name="relu1", sanity_images=0)
    assert table.set_index("method")["layer"].to_dict() == {"gradcam": "relu1", "cam": "conv2"}
    assert [cls.name for cls in cam.METHODS.values() if cls.layer_fixed] == ["cam"]
    with pytest.raises(CovidTfError, match=r"unknown class 'Pneumonia'; the model's classes are COVID, Normal, Other"):
        quality_table(small_cnn(), frame, ["COVID", "Normal", "Other"], class_name="Pneumonia")


def test_score_cam_without_a_live_channel_gives_zero_maps() -> None:
    """Every activation map constant: no masked image at all goes through the model (an empty loop in the graph)."""
    model = small_cnn()
    model.get_layer("conv2").set_weights([np.zeros_like(weight) for weight in model.get_layer("conv2").get_weights()])
    for subtract_baseline in (False, True):
        heatmaps, _, _ = cam.ScoreCAM(model, subtract_baseline=subtract_baseline).explain(random_images(3))
        check_maps(heatmaps, 3, 32)
        assert not heatmaps.any()

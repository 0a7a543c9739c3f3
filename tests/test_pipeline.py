"""The tf.data pipeline: shapes, labels, channels, order, augmentation, statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from covid_tf.data.images import load_image
from covid_tf.data.pipeline import make_dataset, make_training_datasets, pixel_statistics
from covid_tf.data.preprocessing import augmentation_layers
from tests.helpers import write_png


@pytest.fixture
def image_paths(tmp_path):
    rng = np.random.default_rng(0)
    return [str(write_png(tmp_path / f"{i}.png", rng.integers(0, 255, (20, 24), dtype=np.uint8))) for i in range(6)]


@pytest.mark.parametrize("channels", [1, 3])
def test_batches_have_the_requested_shape_and_one_hot_labels(image_paths, channels):
    dataset = make_dataset(image_paths, [0, 1, 2, 0, 1, 2], num_classes=3, image_size=16, channels=channels,
                           batch_size=4)
    batches = list(dataset)
    assert [len(x) for x, _ in batches] == [4, 2]
    images, labels = batches[0]
    assert images.shape == (4, 16, 16, channels) and labels.shape == (4, 3)
    np.testing.assert_array_equal(labels.numpy().argmax(1), [0, 1, 2, 0])


def test_unshuffled_order_and_values_match_load_image(image_paths):
    images = np.concatenate([batch.numpy() for batch in make_dataset(image_paths, image_size=16, batch_size=4)])
    expected = np.stack([load_image(p, 1, 16) for p in image_paths])
    np.testing.assert_allclose(images, expected, atol=1e-6)


def test_shuffle_is_seeded_and_keeps_pairs(image_paths):
    def first_epoch(seed):
        dataset = make_dataset(image_paths, list(range(6)), num_classes=6, image_size=16, batch_size=6,
                               shuffle=True, seed=seed)
        images, labels = next(iter(dataset))
        return images.numpy(), labels.numpy().argmax(1)

    images, order = first_epoch(1)
    again, order_again = first_epoch(1)
    np.testing.assert_array_equal(order, order_again)
    assert sorted(order) == list(range(6))
    for image, label in zip(images, order):  # image and label still belong together
        np.testing.assert_allclose(image, load_image(image_paths[label], 1, 16), atol=1e-6)


def test_augmentation_runs_in_the_pipeline(image_paths):
    plain = next(iter(make_dataset(image_paths, image_size=16, batch_size=6))).numpy()
    augmented = next(iter(make_dataset(image_paths, image_size=16, batch_size=6,
                                       augmentation=augmentation_layers("rotate")))).numpy()
    assert augmented.shape == plain.shape and np.abs(augmented - plain).max() > 0.05


def test_file_cache_and_statistics(image_paths, tmp_path):
    dataset = make_dataset(image_paths, image_size=16, batch_size=6, cache=tmp_path / "cache" / "data")
    first = next(iter(dataset)).numpy()
    np.testing.assert_allclose(next(iter(dataset)).numpy(), first)
    mean, std = pixel_statistics(image_paths, 16)
    values = np.stack([load_image(p, 1, 16) for p in image_paths])
    assert mean[0] == pytest.approx(values.mean(), abs=1e-4) and std[0] == pytest.approx(values.std(), abs=1e-4)
    with pytest.raises(ValueError):
        make_dataset([])


@pytest.mark.parametrize("cache", [True, "file"])
def test_training_twin_reads_the_cache_and_equals_an_uncached_dataset(image_paths, tmp_path, cache):
    cache = tmp_path / "cache" / "train" if cache == "file" else cache
    labels = [0, 1, 0, 1, 0, 1]
    options = dict(num_classes=2, image_size=16, batch_size=4, seed=3)
    train, twin = make_training_datasets(image_paths, labels, cache=cache, **options)
    alone = make_dataset(image_paths, labels, shuffle=True, cache=False, **options)
    expected = make_dataset(image_paths, shuffle=True, cache=False, **options)
    for _ in range(2):  # a training pass fills the cache, then the twin reads it; orders change each epoch
        for (x, y), (x_alone, y_alone) in zip(train, alone, strict=True):
            np.testing.assert_array_equal(x.numpy(), x_alone.numpy())
            np.testing.assert_array_equal(y.numpy(), y_alone.numpy())
        for x, x_expected in zip(twin, expected, strict=True):
            np.testing.assert_array_equal(x.numpy(), x_expected.numpy())
    Path(image_paths[1]).unlink()  # the twin reads the cache, not the files
    assert sum(len(x) for x in twin) == 6


GRAPH_TOLERANCE = 1e-5  # tf.image.resize(method="area") against OpenCV's INTER_AREA: float rounding (2e-6 seen)


@pytest.mark.parametrize("channels", [1, 3])
def test_lung_attention_inputs_decoded_in_the_graph_match_roi_image(tmp_path, channels):
    from PIL import Image

    from covid_tf.data import roi_pipeline
    from covid_tf.lungs.roi import inputs as ri
    from covid_tf.lungs.roi import mask_table

    rng = np.random.default_rng(0)
    lungs = np.zeros((45, 37), np.uint8)
    lungs[8:38, 4:16] = 255
    lungs[8:38, 21:33] = 130  # >= 128: lung, as read_mask thresholds it
    lungs[40:, :] = 127  # < 128: not lung
    cases = {  # name: (image, mask or None, decoded in the graph)
        "gray, mask": (rng.integers(0, 256, (45, 37), np.uint8), lungs, True),
        "gray, same size as the model": (rng.integers(0, 256, (24, 24), np.uint8), lungs[:24, :24], True),
        "gray, empty mask": (rng.integers(0, 256, (30, 50), np.uint8), np.zeros((30, 50), np.uint8), True),
        "gray, no mask": (rng.integers(0, 256, (33, 29), np.uint8), None, True),
        "rgb": (rng.integers(0, 256, (45, 37, 3), np.uint8), lungs, channels == 3),
        "mask of another size": (rng.integers(0, 256, (45, 37), np.uint8), lungs[:40], False),
        "smaller than the model": (rng.integers(0, 256, (20, 30), np.uint8), lungs[:20, :30], False),
        "jpeg": (rng.integers(0, 256, (45, 37), np.uint8), lungs, False),
    }
    paths, rows = [], []
    for index, (name, (image, mask, _)) in enumerate(cases.items()):
        path = tmp_path / f"{index}.{'jpg' if name == 'jpeg' else 'png'}"
        Image.fromarray(image).save(path)
        mask_path = ""
        if mask is not None:
            mask_path = str(tmp_path / f"{index}_mask.png")
            Image.fromarray(mask).save(mask_path)
        paths.append(str(path))
        rows.append([str(path), mask_path, "dataset", mask is not None, ""])
    table = pd.DataFrame(rows, columns=list(mask_table.ROI_COLUMNS))
    loader = ri.RoiLoader(ri.RoiSpec("lungs-attention"), table, 24, channels)
    in_graph = roi_pipeline.mask_table(loader.masks, paths, 24, channels)
    assert [value != roi_pipeline.PYTHON for value in in_graph.values()] == [c[2] for c in cases.values()]
    batches = make_dataset(paths, image_size=24, channels=channels, batch_size=3, cache=False, loader=loader)
    decoded = np.concatenate([batch.numpy() for batch in batches])
    for name, path, data in zip(cases, paths, decoded):
        expected = loader(path)
        assert data.shape == expected.shape == (24, 24, channels + 1), name
        np.testing.assert_allclose(data, expected, atol=GRAPH_TOLERANCE, rtol=0, err_msg=name)
    assert (decoded[2, ..., -1] == 1).all() and (decoded[3, ..., -1] == 1).all()  # no lungs: pooled everywhere
    assert decoded[0, ..., -1].max() == 1 and decoded[0, ..., -1].min() == 0

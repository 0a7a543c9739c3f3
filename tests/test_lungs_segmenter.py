"""The lung U-Net, its training run and batched segmentation, on tiny synthetic data."""

from __future__ import annotations

import numpy as np

from covid_tf.lungs.segmentation import augment, unet


def test_unet_keeps_any_multiple_of_its_size():
    model = unet.build_unet(levels=2, base_filters=4, stem=2)
    assert unet.size_multiple(model) == 8
    for height, width in ((16, 16), (24, 40)):
        output = np.asarray(model(np.zeros((1, height, width, 1), np.float32), training=False))
        assert output.shape == (1, height, width, 1)
        assert output.min() >= 0.0 and output.max() <= 1.0


def test_augmentation_without_change_is_the_identity():
    ranges = augment.AugmentationRanges(scale=(1.0, 1.0), aspect=0.0, rotation_degrees=0.0, shear=0.0, shift=0.0,
                                        contrast=(1.0, 1.0), gamma=(1.0, 1.0), brightness=0.0, noise=0.0,
                                        blur_probability=0.0, washout_probability=0.0, equalize_probability=0.0)
    image = np.random.default_rng(0).random((12, 20, 1)).astype(np.float32)
    mask = (image > 0.5).astype(np.float32)
    out_image, out_mask = augment.augment_pair(image, mask, ranges)
    np.testing.assert_allclose(out_image.numpy(), image, atol=1e-4)
    np.testing.assert_array_equal(out_mask.numpy(), mask)


def test_washout_and_equalisation_change_the_grey_range_as_documented():
    import tensorflow as tf

    ranges = augment.AugmentationRanges(washout_low=0.4, washout_high=0.2)
    image = tf.constant(np.linspace(0.0, 1.0, 400, dtype=np.float32).reshape(20, 20, 1) ** 3)
    tf.random.set_seed(1)
    for _ in range(5):
        washed = augment.washout(image, ranges).numpy()
        assert 0.0 <= washed.min() <= 0.4 and 0.8 <= washed.max() <= 1.0
        assert np.all(np.diff(washed.ravel()) >= -1e-6)  # the order of the grey values is kept
    equalized = augment.equalize(image).numpy().ravel()
    # The cubed ramp crowds its pixels into the darks; equalised, the quarters of the range hold far more even shares.
    before = np.histogram(image.numpy(), bins=4, range=(0, 1))[0]
    after = np.histogram(equalized, bins=4, range=(0, 1))[0]
    assert before[0] > 250 and np.abs(after - 100).max() < np.abs(before - 100).max() / 3
    assert np.all(np.diff(equalized) >= 0) and equalized.min() == 0.0 and equalized.max() == 1.0


def test_traced_forward_pass_does_not_keep_the_segmenter_alive():
    import gc
    import weakref

    import numpy as np

    from covid_tf.lungs.segmentation import segmenter as segment

    model = segment.load_segmenter()
    held = weakref.ref(model)
    masks = segment.predict_masks(model, [np.random.default_rng(0).random((64, 64, 1)).astype("float32")], 64)
    assert masks[0].shape == (64, 64) and model in segment._FORWARD_PASSES
    del model
    gc.collect()
    assert held() is None


def test_a_film_in_a_sliver_of_the_grey_range_is_stretched_before_the_segmenter_sees_it():
    from covid_tf.lungs.segmentation import segmenter as segment

    film = np.random.default_rng(0).random((32, 32, 1)).astype(np.float32)
    sliver = 237 / 255 + film * 18 / 255  # a JSRT film that lies in 237-255 of 255
    np.testing.assert_allclose(segment.stretch_contrast(sliver), segment.stretch_contrast(film), atol=1e-5)
    full = np.concatenate([np.zeros((1, 32, 1)), film[1:-1], np.ones((1, 32, 1))]).astype(np.float32)
    np.testing.assert_array_equal(segment.stretch_contrast(full), full)
    flat = np.full((8, 8, 1), 0.5, np.float32)
    np.testing.assert_array_equal(segment.stretch_contrast(flat), flat)
    seen = []

    def model(batch, training=False):  # a stand-in segmenter that records its input
        seen.append(np.asarray(batch))
        return np.zeros_like(batch)

    segment.predict_probabilities(model, [sliver], 32)
    assert seen[0].min() == 0.0 and seen[0].max() == 1.0

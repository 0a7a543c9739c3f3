"""The lung U-Net, its training run and batched segmentation, on tiny synthetic data."""

from __future__ import annotations

import numpy as np

from covid_tf.lungs import augment, unet


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
                                        blur_probability=0.0)
    image = np.random.default_rng(0).random((12, 20, 1)).astype(np.float32)
    mask = (image > 0.5).astype(np.float32)
    out_image, out_mask = augment.augment_pair(image, mask, ranges)
    np.testing.assert_allclose(out_image.numpy(), image, atol=1e-4)
    np.testing.assert_array_equal(out_mask.numpy(), mask)


def test_traced_forward_pass_does_not_keep_the_segmenter_alive():
    import gc
    import weakref

    import numpy as np

    from covid_tf.lungs import segment

    model = segment.load_segmenter()
    held = weakref.ref(model)
    masks = segment.predict_masks(model, [np.random.default_rng(0).random((64, 64, 1)).astype("float32")], 64)
    assert masks[0].shape == (64, 64) and model in segment._FORWARD_PASSES
    del model
    gc.collect()
    assert held() is None

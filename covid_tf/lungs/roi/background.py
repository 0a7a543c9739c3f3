"""Background randomisation for lung-attention training (``train --roi-background P``).

With probability ``P`` per training image, everything outside its dilated lungs is replaced by a random
fill: the image's mean grey, a strong blur of the image itself, noise of the image's own mean and spread,
or another training image of the batch. The lungs and the mask channel stay as they are. What lies around
the lungs then stops predicting the label, so a model can only keep its accuracy from the lungs; the
occlusion check (``covid_tf.workflows.occlusion``) measures whether it did.
"""

from __future__ import annotations

FILLS = ("mean", "blur", "noise", "other")
BLUR_GRID = 8  # the blur fill: the image shrunk to 8 x 8 (area) and enlarged again, a blur of ~1/8 of the side


def grow_masks(masks, radius: int):
    """``(N, H, W, 1)`` masks dilated by a square of ``radius`` pixels (a (2r+1)-wide max filter; ``radius`` 0:
    unchanged). The square's maximum is a row maximum of column maxima: two thin windows, the same result at a
    third of the cost of one square window."""
    import tensorflow as tf

    if radius <= 0:
        return masks
    width = 2 * radius + 1
    return tf.nn.max_pool2d(tf.nn.max_pool2d(masks, [1, width], 1, "SAME"), [width, 1], 1, "SAME")


def background_transform(channels: int, probability: float, dilation: int, seed: int = 0):
    """A batch function for training: ``(N, S, S, channels + 1)`` image + mask batches -> the same with the
    outside of the lungs (dilated by ``dilation`` pixels) randomly filled in a share ``probability`` of them.

    The randomness is stateless, keyed on ``seed`` and the batch's own pixels (the shuffle makes every epoch's
    batches differ): a run reproduces exactly, and no random-generator variable is created before the run's
    distribution strategy (which multi-worker training forbids)."""
    import tensorflow as tf

    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"the background probability must be in [0, 1], got {probability}")

    def fills(images, noise_seed):
        size = tf.shape(images)[1:3]
        mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
        spread = tf.math.reduce_std(images, axis=[1, 2], keepdims=True)
        blur = tf.image.resize(tf.image.resize(images, [BLUR_GRID, BLUR_GRID], method="area"), size)
        noise = tf.clip_by_value(mean + spread * tf.random.stateless_normal(tf.shape(images), noise_seed), 0.0, 1.0)
        other = tf.roll(images, shift=1, axis=0)
        return tf.stack([mean + tf.zeros_like(images), blur, noise, other], axis=1)

    def apply(batch):
        images, masks = batch[..., :channels], batch[..., channels:]
        count = tf.shape(batch)[0]
        content = tf.reduce_sum(tf.cast(tf.round(batch * 255.0), tf.int64))
        key = tf.stack([tf.constant(seed, tf.int64), content])
        choice_seed, apply_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(key, 3))
        grown = grow_masks(masks, dilation)
        choice = tf.random.stateless_uniform([count], choice_seed, 0, len(FILLS), dtype=tf.int32)
        fill = tf.gather(fills(images, noise_seed), choice, axis=1, batch_dims=1)
        chosen = tf.cast(tf.random.stateless_uniform([count, 1, 1, 1], apply_seed) < probability, images.dtype)
        keep = 1.0 - chosen * (1.0 - grown)  # 1 in the (dilated) lungs, and everywhere in unchosen images
        return tf.concat([images * keep + fill * (1.0 - keep), masks], axis=-1)

    return apply

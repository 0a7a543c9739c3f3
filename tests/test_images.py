"""Every supported file kind loads to one convention; every bad file gets a clear reason."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from covid_tf.data.images import load_image, resize_image, save_png, to_channels
from covid_tf.errors import ImageReadError
from tests.helpers import gradient_image, write_png


def test_grayscale_png_loads_as_float_in_unit_range(tmp_path):
    array = gradient_image()
    image = load_image(write_png(tmp_path / "a.png", array))
    assert image.dtype == np.float32 and image.shape == (16, 16, 1)
    np.testing.assert_allclose(image[..., 0], array / 255.0, atol=1e-6)


def test_rgb_rgba_palette_16bit_and_cmyk_all_load(tmp_path):
    gray = gradient_image()
    rgb = np.stack([gray] * 3, axis=-1)
    rgba = np.concatenate([rgb, np.full((16, 16, 1), 255, np.uint8)], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(tmp_path / "palette.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    expected = gray / 255.0
    for name in ("rgb.png", "rgba.png", "palette.png", "sixteen.png"):
        image = load_image(tmp_path / name, channels=1)
        assert image.shape == (16, 16, 1), name
        np.testing.assert_allclose(image[..., 0], expected, atol=0.02, err_msg=name)
    cmyk = load_image(tmp_path / "cmyk.jpg", channels=3)
    assert cmyk.shape == (16, 16, 3) and cmyk.min() >= 0.0 and cmyk.max() <= 1.0


def test_rgba_is_composited_on_black(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = 0
    assert load_image(write_png(tmp_path / "clear.png", rgba)).max() == 0.0


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((20, 40), np.uint8)
    array[:, :10] = 255  # bright band on the left of a landscape image
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    loaded = load_image(tmp_path / "rotated.jpg")
    assert loaded.shape[:2] == (40, 20)
    assert loaded[:10].mean() > 0.8 and loaded[-10:].mean() < 0.2  # the band is now on top


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("not an image at all"), "not an image"),
        (lambda p: p.write_bytes(write_png(p.with_name("full.png"), gradient_image(64)).read_bytes()[:200]),
         "truncated"),
    ],
    ids=["zero-byte", "text-named-png", "truncated"],
)
def test_bad_files_raise_with_file_and_reason(tmp_path, make, reason):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(ImageReadError, match=reason) as info:
        load_image(path)
    assert info.value.path == str(path)


def test_truncated_jpeg_is_reported(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ImageReadError, match="truncated"):
        load_image(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="directory"):
        load_image(tmp_path)


def test_channels_and_resize():
    image = np.random.default_rng(0).random((10, 12, 1)).astype(np.float32)
    assert to_channels(image, 3).shape == (10, 12, 3)
    np.testing.assert_allclose(to_channels(to_channels(image, 3), 1), image, atol=1e-6)
    assert resize_image(image, 5).shape == (5, 5, 1)
    assert resize_image(image, (20, 24)).shape == (20, 24, 1)
    with pytest.raises(ValueError):
        to_channels(image, 2)


def test_save_png_round_trip(tmp_path):
    image = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8, 1)
    save_png(image, tmp_path / "out.png")
    np.testing.assert_allclose(load_image(tmp_path / "out.png"), image, atol=1 / 255)

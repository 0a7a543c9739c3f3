"""Synthetic chest X-rays: determinism, layout, lesions, shortcut marker, patients, CLI."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from covid_tf import cli
from covid_tf.errors import CovidTfError
from covid_tf.synthetic import xray as synthetic

SIZE = 64
CLASSES = ("COVID", "Normal", "Viral Pneumonia", "Lung Opacity", "Nodule")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kwargs = {"classes": ("COVID", "Normal"), "per_class": 3, "size": SIZE, "patients_per_class": 2}
    synthetic.generate_dataset(tmp_path / "a", seed=7, **kwargs)
    synthetic.generate_dataset(tmp_path / "b", seed=7, **kwargs)
    synthetic.generate_dataset(tmp_path / "c", seed=8, **kwargs)
    first, second, third = (_files(tmp_path / name) for name in "abc")
    assert first == second
    assert first.keys() == third.keys()
    assert first["COVID/images/COVID-0001.png"] != third["COVID/images/COVID-0001.png"]


def test_layout_and_metadata(tmp_path):
    metadata = synthetic.generate_dataset(
        tmp_path, classes=("COVID", "Viral Pneumonia"), per_class=2, size=SIZE
    )
    assert list(metadata.columns) == ["path", "label", "patient_id", "has_marker"]
    on_disk = pd.read_csv(tmp_path / "metadata.csv")
    assert list(on_disk.columns) == list(metadata.columns)
    assert on_disk["path"].tolist() == [
        "COVID/images/COVID-0001.png", "COVID/images/COVID-0002.png",
        "Viral Pneumonia/images/Viral Pneumonia-0001.png", "Viral Pneumonia/images/Viral Pneumonia-0002.png",
    ]
    assert not on_disk["has_marker"].any()
    assert (tmp_path / ".covid_tf_synthetic").is_file()
    for relative in on_disk["path"]:
        image = cv2.imread(str(tmp_path / relative), cv2.IMREAD_UNCHANGED)
        assert image.shape == (SIZE, SIZE) and image.dtype == np.uint8
        for kind in ("masks", "lesions"):
            mask = cv2.imread(str(tmp_path / relative.replace("/images/", f"/{kind}/")), cv2.IMREAD_UNCHANGED)
            assert mask.shape == (SIZE, SIZE)
            assert set(np.unique(mask)) <= {0, 255}
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("label", CLASSES)
def test_lesions_inside_lungs_and_by_class(label):
    for seed in range(3):
        image, lung, lesion = synthetic.render_case(np.random.default_rng(seed), label, SIZE)
        assert image.dtype == np.uint8 and lung.dtype == bool and lesion.dtype == bool
        assert 0.12 < lung.mean() < 0.5, "two lung fields cover a plausible part of the image"
        assert not (lesion & ~lung).any()
        if label == "Normal":
            assert not lesion.any()
        else:
            assert lesion.sum() >= 4


def test_anatomy_lungs_darker_than_mediastinum_and_heart_on_image_right():
    image, lung, _ = synthetic.render_case(np.random.default_rng(3), "Normal", 128)
    body = image[int(0.2 * 128):int(0.6 * 128), int(0.47 * 128):int(0.53 * 128)]  # spine / mediastinum
    assert image[lung].mean() + 40 < body.mean()
    assert image[:8, :8].mean() + 40 < body.mean()  # dark background corner
    rows = slice(int(0.55 * 128), int(0.68 * 128))
    left, right = lung[rows, :64].sum(), lung[rows, 64:].sum()
    assert right < left  # the heart hides the lower left lung (image right)


def test_covid_lesions_are_bilateral_peripheral_and_lower():
    lesion = np.zeros((SIZE, SIZE), int)
    for seed in range(4):
        _, lung, mask = synthetic.render_case(np.random.default_rng(seed), "COVID", SIZE)
        assert mask[:, : SIZE // 2].any() and mask[:, SIZE // 2:].any()
        lesion += mask
    ys, xs = np.nonzero(lesion)
    assert ys.mean() > 0.5 * SIZE
    assert np.abs(xs - SIZE / 2).mean() > 0.22 * SIZE


def _lesion_contrast(label: str, difficulty: float, seed: int) -> float:
    """Mean brightening inside the lesion mask against the same case without lesions."""
    normal, _, _ = synthetic.render_case(np.random.default_rng(seed), "Normal", 96)
    image, lung, lesion = synthetic.render_case(np.random.default_rng(seed), label, 96, difficulty=difficulty)
    difference = image.astype(float) - normal
    assert not difference[~lung].any(), "lesion intensity strictly inside the lungs"
    return float(difference[lesion].mean())


@pytest.mark.parametrize("label", ["COVID", "Lung Opacity", "Viral Pneumonia"])
def test_lesion_contrast_present_and_decreasing_with_difficulty(label):
    contrasts = np.array([[_lesion_contrast(label, d, seed) for d in (0.0, 0.5, 1.0)] for seed in range(3)])
    means = contrasts.mean(axis=0)
    assert means[0] > means[1] > means[2] > 0
    assert means[1] > 8  # visible at the default difficulty
    # ...and brighter than the surrounding lung at the default difficulty.
    image, lung, lesion = synthetic.render_case(np.random.default_rng(0), label, 96)
    ring = cv2.dilate(lesion.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & lung & ~lesion
    assert image[lesion].mean() > image[ring].mean()


def test_marker_outside_lungs():
    size = 96
    for seed in range(4):
        plain, lung, _ = synthetic.render_case(np.random.default_rng(seed), "COVID", size)
        marked, lung2, _ = synthetic.render_case(np.random.default_rng(seed), "COVID", size, marker=True)
        changed = plain != marked
        assert np.array_equal(lung, lung2)
        assert changed.sum() > 10
        assert not (changed & lung).any()
        assert marked[changed].min() >= 235


def test_shortcut_marker_correlates_with_class(tmp_path):
    metadata = synthetic.generate_dataset(
        tmp_path, per_class=20, size=32, shortcut_class="COVID", shortcut_probability=0.9, seed=1
    )
    rate = metadata.groupby("label")["has_marker"].mean()
    assert rate["COVID"] >= 0.7
    assert rate["Normal"] <= 0.3


def test_several_images_per_patient(tmp_path):
    metadata = synthetic.generate_dataset(
        tmp_path, classes=("Normal",), per_class=9, size=SIZE, patients_per_class=3
    )
    assert metadata.groupby("patient_id").size().tolist() == [3, 3, 3]

    def lung_ratio(relative: str) -> float:
        """Left / right lung area: a patient trait that pose (shift, rotation, scale) hardly changes."""
        lung = cv2.imread(str(tmp_path / relative.replace("/images/", "/masks/")), 0) > 0
        return lung[:, : SIZE // 2].sum() / lung[:, SIZE // 2:].sum()

    ratios = metadata["path"].map(lung_ratio).groupby(metadata["patient_id"])
    within = (ratios.max() - ratios.min()).max()
    between = ratios.mean().max() - ratios.mean().min()
    assert within < 0.06
    assert between > 2 * within
    first = metadata["path"][:2].map(lambda p: (tmp_path / p).read_bytes())
    assert first[0] != first[1]


def test_refuses_foreign_folder_but_reruns_own(tmp_path):
    (tmp_path / "notes.txt").write_text("user data")
    with pytest.raises(CovidTfError, match="not empty"):
        synthetic.generate_dataset(tmp_path, per_class=1, size=32)
    assert not (tmp_path / "COVID").exists()
    synthetic.generate_dataset(tmp_path, per_class=2, size=32, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "user data"
    # A rerun into its own folder needs no overwrite and removes the images it no longer lists.
    synthetic.generate_dataset(tmp_path, per_class=1, size=32)
    assert not (tmp_path / "COVID/images/COVID-0002.png").exists()
    assert (tmp_path / "notes.txt").exists()


@pytest.mark.parametrize(
    "kwargs",
    [{"size": 8}, {"difficulty": 1.5}, {"shortcut_class": "Lung Opacity"}, {"classes": ("a/b",)},
     {"patients_per_class": 5}, {"shortcut_probability": 0.5}],
)
def test_bad_options_raise(tmp_path, kwargs):
    with pytest.raises(CovidTfError):
        synthetic.generate_dataset(tmp_path, **{"per_class": 2, "size": 32, **kwargs})


def test_cli_writes_files(tmp_path, capsys):
    out = tmp_path / "synth"
    code = cli.main([
        "synth", "--out", str(out), "--classes", "COVID,Normal", "--per-class", "2", "--size", "32",
        "--patients-per-class", "1", "--seed", "3", "--shortcut-class", "COVID",
    ])
    assert code == 0
    assert "wrote 4 images" in capsys.readouterr().out
    metadata = pd.read_csv(out / "metadata.csv")
    assert len(metadata) == 4 and metadata["patient_id"].nunique() == 2
    assert (out / "Normal/lesions/Normal-0002.png").is_file()
    assert cli.main(["synth", "--out", str(out), "--difficulty", "2"]) == 2
    assert "difficulty" in capsys.readouterr().err


def test_cached_arrays_are_read_only():
    """The synthetic caches hand the same arrays to every caller: none can be changed for the next one."""
    from covid_tf.synthetic import anatomy, xray

    for array in (*anatomy.grid(16), anatomy.spline_basis(6), xray._gamma_table(0.9)):
        assert not array.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            array[...] = 0
    assert anatomy.grid(16)[0] is anatomy.grid(16)[0]  # still cached

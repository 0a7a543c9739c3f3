"""The chest phantom of the synthetic CT series: one patient's anatomy and lesions, slice by slice, in HU.

:class:`Patient` draws a patient's geometry (body, lungs, heart, lesions of the class) from a seeded generator;
``slice_hu(t)`` renders the axial slice at height ``t`` (0 the lung bases, 1 the apices) with its lesion mask, and
``lung_mask(t)`` gives the true lungs of that slice (lesions included, the heart excluded): the ground truth the
CT lung segmenter (:mod:`covid_tf.lungs.segmentation.ct_lungs`) is measured against. :mod:`covid_tf.synthetic.ct`
writes the
slices as DICOM files.
"""

from __future__ import annotations

import cv2
import numpy as np

AIR_HU = -1000.0
FAT_HU = -100.0
SOFT_TISSUE_HU = 40.0
LUNG_HU = -850.0
BONE_HU = 700.0
GROUND_GLASS_HU = (-500.0, -300.0)
CONSOLIDATION_HU = (0.0, 40.0)


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-blurred white noise scaled to [0, 1], for patchy lesions."""
    field = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigmaX=sigma)
    low, high = float(field.min()), float(field.max())
    return (field - low) / (high - low + 1e-6)


class Patient:
    """Random anatomy and lesions of one patient; ``slice_hu(t)`` renders the slice at height t in [0, 1]."""

    def __init__(self, rng: np.random.Generator, label: str, size: int) -> None:
        self.rng = rng
        self.label = label
        self.size = size
        self.body = (rng.uniform(0.80, 0.90), rng.uniform(0.58, 0.66))
        self.lung = (rng.uniform(0.27, 0.32), rng.uniform(0.38, 0.44))
        self.lung_x = rng.uniform(0.38, 0.43)
        self.heart = (rng.uniform(0.05, 0.12), rng.uniform(0.22, 0.27))
        self.lesions: list[tuple] = []  # (side, cx, cy, ct, rx, ry, rt, hu)
        if label.upper() == "COVID":
            for _ in range(int(rng.integers(3, 7))):
                side = float(rng.choice([-1.0, 1.0]))
                angle = rng.uniform(-0.6 * np.pi, 0.6 * np.pi)  # lateral and posterior-lateral rim
                lx, ly = self.lung
                cx = side * (self.lung_x + 0.8 * lx * np.cos(angle))
                cy = -0.02 + 0.8 * ly * np.sin(angle)
                self.lesions.append(
                    (side, cx, cy, rng.uniform(0.2, 0.8), rng.uniform(0.12, 0.2), rng.uniform(0.12, 0.22),
                     rng.uniform(0.2, 0.35), rng.uniform(*GROUND_GLASS_HU))
                )  # fmt: skip
        elif label.upper() == "CAP":
            side = float(rng.choice([-1.0, 1.0]))
            # (side, fissure height, fissure tilt, lowest t, highest t): the lung below an oblique fissure.
            self.consolidation = (
                side,
                rng.uniform(-0.15, 0.10),
                rng.uniform(-0.35, 0.35),
                rng.uniform(0.0, 0.15),
                rng.uniform(0.45, 0.7),
            )
        self.patchiness = _smooth_noise(rng, (size, size), sigma=max(1.0, size / 48))
        # Where the patient lies in the field of view: no two patients' slices at one height look alike (else the
        # near-duplicate check of a split joins patients, lesion-free slices of different classes among them).
        self.offset = rng.uniform(-0.06, 0.06, size=2)

    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        coords = (np.arange(self.size) + 0.5) / self.size * 2.0 - 1.0
        x, y = np.meshgrid(coords - self.offset[0], coords - self.offset[1])
        return x, y  # x: patient right -> left, y: anterior -> posterior

    def _lungs_and_heart(self, x: np.ndarray, y: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """The lungs (the heart cut out) and the heart of the slice at height ``t``."""
        scale = 0.75 + 0.25 * np.sin(np.pi * (0.15 + 0.7 * t))  # lungs widest mid-chest
        lx, ly = self.lung[0] * scale, self.lung[1] * scale
        lungs = _ellipse(x, y, -self.lung_x, -0.02, lx, ly) | _ellipse(x, y, self.lung_x, -0.02, lx, ly)
        heart_scale = 1.25 - 0.6 * t  # the heart fills the lower chest
        hx, hr = self.heart
        heart = _ellipse(x, y, hx, -0.12, hr * heart_scale, 0.8 * hr * heart_scale)
        return lungs & ~heart, heart

    def lung_mask(self, t: float) -> np.ndarray:
        """The true lungs of the slice at height ``t`` (lesions included, the heart excluded), bool (size, size)."""
        x, y = self._grid()
        return self._lungs_and_heart(x, y, t)[0]

    def slice_hu(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """HU image of the slice at height ``t`` (0 inferior, 1 superior) and its lesion mask."""
        rng, size = self.rng, self.size
        x, y = self._grid()
        hu = np.full((size, size), AIR_HU)
        bx, by = self.body
        body = _ellipse(x, y, 0.0, 0.05, bx, by)
        hu[body] = FAT_HU
        hu[_ellipse(x, y, 0.0, 0.05, bx - 0.06, by - 0.06)] = SOFT_TISSUE_HU
        for angle in np.linspace(0.15 * np.pi, 0.85 * np.pi, 4):  # ribs on both sides
            for side in (-1.0, 1.0):
                rib_x = side * (bx - 0.10) * np.sin(angle)
                rib_y = 0.05 - (by - 0.10) * np.cos(angle)
                hu[_ellipse(x, y, rib_x, rib_y, 0.035, 0.035)] = BONE_HU
        lungs, heart = self._lungs_and_heart(x, y, t)
        hu[lungs] = LUNG_HU
        hu[heart] = SOFT_TISSUE_HU
        hu[_ellipse(x, y, 0.10, 0.28, 0.06, 0.06)] = SOFT_TISSUE_HU  # descending aorta
        hu[_ellipse(x, y, 0.0, 0.42, 0.10, 0.09)] = BONE_HU  # vertebral body
        hu[_ellipse(x, y, 0.0, 0.55, 0.035, 0.035)] = 20.0  # spinal canal
        lesion = np.zeros((size, size), dtype=bool)
        for side, cx, cy, ct, rx, ry, rt, value in self.lesions:
            depth = 1.0 - ((t - ct) / rt) ** 2
            if depth <= 0:
                continue
            shrink = np.sqrt(depth)
            blob = _ellipse(x, y, cx, cy, rx * shrink, ry * shrink) & lungs & (np.sign(x) == side)
            blob &= self.patchiness > 0.45  # patchy, not a solid disc
            hu[blob] = value + rng.normal(0.0, 25.0, size=int(blob.sum()))
            lesion |= blob
        if self.label.upper() == "CAP":
            side, cut, tilt, low_t, high_t = self.consolidation
            if low_t <= t <= high_t:
                lobe = lungs & (np.sign(x) == side) & (y - cut > tilt * side * x - 0.3 * (t - low_t))
                hu[lobe] = rng.uniform(*CONSOLIDATION_HU) + rng.normal(0.0, 8.0, size=int(lobe.sum()))
                lesion |= lobe
        hu += rng.normal(0.0, 12.0, size=hu.shape) * body  # scanner noise inside the body
        return np.clip(hu, -1024.0, 3071.0), lesion



"""The lung-ROI vocabulary: one table of ``train --roi`` modes with their properties, and ``RoiSpec``.

Every module that asks what a mode does reads this table (no module compares mode strings). It imports
nothing heavy, so the command line's parser can offer the modes without TensorFlow or OpenCV.

| mode | the model sees | crop to the lung box | constant fill | mask as last channel | jitter |
| --- | --- | --- | --- | --- | --- |
| ``none`` | the full image | | | | |
| ``lungs`` | the lung box with a margin, resized | yes | | | |
| ``lungs-masked`` | that crop, outside the dilated lungs filled | yes | outside | | yes |
| ``lungs-removed`` | the full image, the dilated lungs filled (the shortcut audit) | | lungs | | yes |
| ``lungs-attention`` | the full image, unmasked; its last feature map averaged over the lungs | | | yes | |
| ``ct-lungs-attention`` | the same on axial CT slices, lungs from ``lungs.segmentation.ct_lungs`` | | | yes | |

Every mode but the last finds lungs with the X-ray segmenter (``modality`` ``xray``).
"""

from __future__ import annotations

from dataclasses import dataclass

from covid_tf.errors import CovidTfError

AUTO = "auto"  # train's default: lungs-attention when the training images have lungs, else none
# What auto adds to lung attention: the outside of the lungs randomly filled in half the training images
# (covid_tf.lungs.roi.background), the variant that passed the occlusion check on the dev set (docs/LUNG_ROI.md).
AUTO_BACKGROUND = 0.5
ATTENTION_MODE = "lungs-attention"
CT_ATTENTION_MODE = "ct-lungs-attention"
DEFAULT_MARGIN = 0.10  # of the lung box's height/width per side
DEFAULT_DILATION = 0.03  # of the image's longer side: the lungs' outline and a little context stay


@dataclass(frozen=True)
class Modality:
    """Whose lungs (``segment --modality``, ``RoiMode.modality``): a kind of image and the segmenter of its lungs."""

    name: str
    title: str
    ct: bool  # axial CT slices, the classical CT segmenter (covid_tf.lungs.segmentation.ct_lungs), no model file;
    # else chest X-rays and the U-Net (covid_tf.lungs.segmentation.segmenter)
    cache_suffix: str  # of a cached segmenter mask's file: .cache/lung_masks/<key><suffix>.png


MODALITY_TABLE: dict[str, Modality] = {modality.name: modality for modality in (
    Modality("xray", "chest X-rays, the U-Net", ct=False, cache_suffix=""),
    Modality("ct", "axial CT slices, the classical CT segmenter", ct=True, cache_suffix="-ct"),
)}
MODALITIES = tuple(MODALITY_TABLE)


def modality_of(name: str, option: str = "modality") -> Modality:
    """The modality called ``name``; ``CovidTfError`` naming ``option`` and the choices for any other."""
    if name not in MODALITY_TABLE:
        raise CovidTfError(f"{option} must be one of {', '.join(MODALITIES)}, got {name!r}")
    return MODALITY_TABLE[name]


@dataclass(frozen=True)
class FillRegion:
    """A region a mode's constant fill covers (``RoiMode.fill``)."""

    name: str
    keeps_lungs: bool  # the fill covers everything outside the (dilated) lungs; else the lungs themselves


FILL_REGIONS: dict[str, FillRegion] = {region.name: region for region in (
    FillRegion("outside", keeps_lungs=True),
    FillRegion("lungs", keeps_lungs=False),
)}


@dataclass(frozen=True)
class RoiMode:
    """What one ``--roi`` mode does to an image and its lung mask."""

    name: str
    title: str  # in figures and tables
    crop: bool = False  # the model's input is the lung box with a margin
    fill: str | None = None  # a FILL_REGIONS name: that region (of the dilated lungs) set to a constant
    mask_channel: bool = False  # the lung mask is the model's last input channel (lung-attention pooling)
    help: str = ""
    modality: str = "xray"  # whose lungs, one of MODALITIES

    @property
    def active(self) -> bool:
        return self.name != "none"

    @property
    def removes_lungs(self) -> bool:
        """Whether the constant fill covers the lungs themselves (only what lies outside them is seen)."""
        return self.fill is not None and not FILL_REGIONS[self.fill].keeps_lungs

    @property
    def jitter(self) -> bool:
        """Whether the training mask jitter applies: the mask's outline is in the image."""
        return self.fill is not None

    @property
    def whole_image(self) -> bool:
        """Whether the model's input spans the whole film (no crop)."""
        return not self.crop


MODES: dict[str, RoiMode] = {mode.name: mode for mode in (
    RoiMode("none", "full image", help="the full image"),
    RoiMode("lungs", "lung box (--roi lungs)", crop=True, help="the lung box with a margin"),
    RoiMode("lungs-masked", "lungs only", crop=True, fill="outside",
            help="the lung box, outside the dilated lungs set to a constant"),
    RoiMode("lungs-removed", "lungs removed", fill="lungs",
            help="the full image, the dilated lungs set to a constant (for the shortcut audit only)"),
    RoiMode(ATTENTION_MODE, "lung attention", mask_channel=True,
            help="the full image, the last feature map averaged over the lungs only"),
    RoiMode(CT_ATTENTION_MODE, "lung attention (CT)", mask_channel=True, modality="ct",
            help="lungs-attention on axial CT slices, with the CT lung segmenter"),
)}
ROI_MODES = tuple(MODES)
JITTER_MODES = tuple(name for name, mode in MODES.items() if mode.jitter)


def roi_mode(name: str) -> RoiMode:
    """The mode called ``name``; ``ValueError`` naming the choices for any other."""
    if name not in MODES:
        raise ValueError(f"unknown ROI {name!r}; choose one of {', '.join(ROI_MODES)}")
    return MODES[name]


@dataclass(frozen=True)
class RoiSpec:
    """How a run turns an image and its lung mask into the model's input (saved in its config.json)."""

    mode: str = "none"
    margin: float = DEFAULT_MARGIN
    dilation: float = DEFAULT_DILATION
    fill: float = 0.0
    jitter: int = 0  # training only: random dilation/erosion of the mask by up to this many pixels

    def __post_init__(self) -> None:
        roi_mode(self.mode)
        if self.margin < 0 or self.dilation < 0 or self.jitter < 0:
            raise ValueError("the ROI margin, dilation and jitter must be 0 or more")
        if self.jitter and not self.kind.jitter:
            raise ValueError(f"ROI jitter applies to {' and '.join(JITTER_MODES)} only, not {self.mode!r}")

    @property
    def kind(self) -> RoiMode:
        return MODES[self.mode]

    @property
    def active(self) -> bool:
        return self.kind.active

    @property
    def mask_input(self) -> bool:
        """Whether the model takes the lung mask as a last input channel (lung-attention pooling)."""
        return self.kind.mask_channel

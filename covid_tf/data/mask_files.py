"""The one rule that finds an image's mask file (lungs or lesions), used by the index, the lung ROI and ``explain``,
and the one reading of a table's ``mask_path`` column (:func:`mask_paths_of`).

The Radiography Database layout keeps masks beside the images, under the same relative name:
``<Class>/images/<name>`` -> ``<Class>/masks/<name>`` (lungs) or ``<Class>/lesions/<name>``. A masks folder
given by the user holds ``<name>`` or ``<stem>.<any image extension>``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from covid_tf import config
from covid_tf.errors import CovidTfError

MASK_FOLDERS = {"lungs": "masks", "lesions": "lesions"}  # mask kind -> folder beside images/
MASK_FOLDER_NAMES = tuple(MASK_FOLDERS.values())  # skipped when images are listed


def find_mask(image_path: str | Path, masks_dir: str | Path | None = None, kind: str = "lungs") -> Path | None:
    """The mask file of an image, or None.

    With ``masks_dir``: ``masks_dir/<name>``, else ``masks_dir/<stem>.<ext>`` for an image extension.
    Without: the layout's own ``masks/`` (or ``lesions/``) folder beside the nearest ``images/`` folder above
    the image, at the same relative path (or with a ``.png`` suffix).
    """
    if kind not in MASK_FOLDERS:
        raise CovidTfError(f"unknown mask kind {kind!r}; choose one of {', '.join(MASK_FOLDERS)}")
    image_path = Path(image_path)
    if masks_dir is not None:
        folder = Path(masks_dir)
        names = [image_path.name, *(f"{image_path.stem}{extension}" for extension in config.IMAGE_EXTENSIONS)]
        return next((folder / name for name in names if (folder / name).is_file()), None)
    images = next((parent for parent in image_path.parents if parent.name == "images"), None)
    if images is None:
        return None
    relative = image_path.relative_to(images)
    folder = images.parent / MASK_FOLDERS[kind]
    for candidate in (folder / relative, folder / relative.with_suffix(".png")):
        if candidate.is_file():
            return candidate
    return None


def mask_paths_of(rows: pd.DataFrame) -> list[str] | None:
    """The lung mask files an index or split table names (its ``mask_path`` column; '' for none), or None when it
    has no such column: what every command hands to the lung ROI with its images."""
    return rows["mask_path"].fillna("").astype(str).tolist() if "mask_path" in rows else None

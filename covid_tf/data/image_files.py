"""The one rule that finds image files below a folder, for every command (``discover``, ``list_images``).

* Hidden files and folders (``.name``) and mask folders (``masks/``, ``lesions/``) are left out.
* A link to a folder is followed, unless it leads into a folder walked already or above it (the folder given
  included): a loop, or the same images twice. So a ``<Class>/images`` that links to a folder elsewhere is read,
  and a link back to the dataset is not.
* A dataset's own index (``metadata.csv``, ``labels.csv``) is no image and not reported; any other file without
  an image extension is skipped with the reason ``not an image file extension``; a folder that cannot be listed
  is skipped with its reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from covid_tf import config
from covid_tf.data.images import scan_image
from covid_tf.data.mask_files import MASK_FOLDER_NAMES
from covid_tf.errors import ImageReadError

CSV_NAMES = ("metadata.csv", "labels.csv")  # a dataset's index: the csv layout, never an image


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of a dataset, and why."""

    path: str
    reason: str


def is_image_name(name: str) -> bool:
    return name.lower().endswith(config.IMAGE_EXTENSIONS)


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows a link; a link to itself or to nothing is no folder
    except OSError:
        return False


def _related(real: str, walked: Iterable[str]) -> bool:
    """Whether the folder ``real`` is one of ``walked``, lies inside one or holds one."""
    return any(real == other or real.startswith(other + os.sep) or other.startswith(real + os.sep)
               for other in walked)


def walk_files(folder: str | Path, skipped: list[SkippedFile] | None = None,
               within: str | Path | None = None) -> Iterator[Path]:
    """The files below ``folder`` (depth first, by name) by the rule of this module; ``within``: a folder whose
    images are read anyway (the dataset around a class folder), so links into it are not followed either."""
    walked = [os.path.realpath(folder), *([os.path.realpath(within)] if within is not None else [])]
    stack = [Path(folder)]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            if skipped is not None:
                reason = f"cannot list the folder ({error.strerror})"
                skipped.append(SkippedFile(str(error.filename or current), reason))
            continue
        folders = []
        for entry in entries:
            if entry.name.startswith(".") or entry.name in CSV_NAMES:
                continue
            if not _is_folder(entry):
                yield Path(entry.path)
            elif entry.name not in MASK_FOLDER_NAMES:
                if entry.is_symlink():
                    real = os.path.realpath(entry.path)
                    if _related(real, walked):
                        continue
                    walked.append(real)
                folders.append(Path(entry.path))
        stack.extend(reversed(folders))


def image_files(folder: str | Path, skipped: list[SkippedFile], within: str | Path | None = None) -> Iterator[Path]:
    """The files of :func:`walk_files` with an image extension; the others appended to ``skipped``."""
    for path in walk_files(folder, skipped, within):
        if is_image_name(path.name):
            yield path
        else:
            skipped.append(SkippedFile(str(path), f"not an image file extension ({path.suffix or 'none'})"))


def list_images(
    inputs: Sequence[str | Path], on_skipped: Callable[[SkippedFile], None] | None = None
) -> tuple[list[str], list[SkippedFile]]:
    """Expand files and folders given on a command line into the paths of readable images (resolved), skipping
    unreadable files (each one also passed to ``on_skipped``, when given); folders by :func:`image_files`."""
    candidates: list[Path] = []
    skipped: list[SkippedFile] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            candidates.extend(image_files(path, skipped))
        elif not (path.exists() or path.is_symlink()):
            skipped.append(SkippedFile(str(path), "file not found"))
        elif is_image_name(path.name):
            candidates.append(path)
        else:
            skipped.append(SkippedFile(str(path), f"not an image file extension ({path.suffix or 'none'})"))
    paths = []
    for path in candidates:
        try:
            scan_image(path)
        except ImageReadError as error:
            skipped.append(SkippedFile(error.path, error.reason))
            continue
        paths.append(str(path.resolve()))
    if on_skipped is not None:
        for item in skipped:
            on_skipped(item)
    return paths, skipped

"""The contact sheet of near-copies: each image beside the reference image it copies (``inspect --against``,
``evaluate``'s overlap)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from covid_tf.data.images import load_image
from covid_tf.errors import ImageReadError
from covid_tf.figures import finish

SHEET_SIZE = 160  # pixels of each image in the sheet


def _thumbnail(path: str) -> np.ndarray | None:
    try:
        return load_image(path, channels=1, size=SHEET_SIZE)[..., 0]
    except ImageReadError:
        return None


def plot_copy_pairs(copies: pd.DataFrame, *, limit: int = 24, columns: int = 3, path: str | Path | None = None,
                    title: str | None = None) -> Figure:
    """A sheet of up to ``limit`` pairs (``test_image``, ``matched_image``, ``similarity``), best match per image."""
    pairs = copies.drop_duplicates("test_image").head(limit)
    rows = max(1, int(np.ceil(len(pairs) / columns)))
    fig = Figure(figsize=(4.6 * columns, 2.5 * rows + (0.4 if title else 0.0)))
    axes = np.atleast_1d(fig.subplots(rows, 2 * columns, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    if pairs.empty:
        axes[0].text(0.5, 0.5, "no copies found", ha="center", va="center", transform=axes[0].transAxes)
    for k, pair in enumerate(pairs.itertuples(index=False)):
        matched = f"= {Path(pair.matched_image).name}\n({pair.split}, {pair.similarity:.3f})"
        for offset, (image_path, caption) in enumerate(((pair.test_image, Path(pair.test_image).name),
                                                         (pair.matched_image, matched))):
            ax = axes[2 * k + offset]
            image = _thumbnail(image_path)
            if image is None:
                ax.text(0.5, 0.5, "not readable", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_title(caption, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return finish(fig, path)

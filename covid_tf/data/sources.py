"""The source (hospital, collection, database) of each image, from a column of the dataset's CSV.

A dataset names its sources in a column of its label CSV or ``metadata.csv`` (``path,label,source``, paths
relative to the CSV's folder, as the Radiography Database's own ``metadata.csv``). The audit's source probe,
``evaluate``'s and ``occlusion``'s source-aware metrics read them here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from covid_tf.data.discover import CSV_NAMES
from covid_tf.errors import CovidTfError
from covid_tf.io_utils import resolved_path, restore_formulas

SOURCE_COLUMN = "source"


def source_table(data: str | Path) -> Path | None:
    """The CSV that may name the sources of ``data``: the CSV itself, or the first of ``CSV_NAMES`` in the folder."""
    data = Path(data).expanduser()
    if data.is_file():
        return data
    return next((data / name for name in CSV_NAMES if (data / name).is_file()), None)


def image_sources(data: str | Path, paths: Sequence[str], column: str | None = None) -> pd.Series | None:
    """The source of each image path (``""`` when the CSV does not list it), or None when there is no source column.

    ``column`` None looks for ``SOURCE_COLUMN`` and returns None without it; a named ``column`` that the data's
    CSV lacks is an error naming the file.
    """
    wanted = column or SOURCE_COLUMN
    csv_path = source_table(data)
    if csv_path is None:
        if column is not None:
            raise CovidTfError(f"{data}: no {' or '.join(CSV_NAMES)} to read the source column {column!r} from")
        return None
    try:
        table = restore_formulas(pd.read_csv(csv_path, dtype=str, keep_default_na=False))
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise CovidTfError(f"{csv_path}: cannot read the CSV for the image sources ({error})") from None
    if wanted not in table or "path" not in table:
        if column is not None:
            lacks = "a 'path' column" if "path" not in table else f"the source column {column!r}"
            raise CovidTfError(f"{csv_path}: lacks {lacks}; its columns are {', '.join(table.columns)}")
        return None
    base = csv_path.parent
    source_of = {resolved_path(base / path): source.strip() for path, source in zip(table["path"], table[wanted])}
    return pd.Series([source_of.get(resolved_path(path), "") for path in paths], dtype=str)

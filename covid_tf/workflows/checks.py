"""What the model checks on a labelled dataset (``occlusion``, ``stress``) share: their common options, checked
once (:class:`CheckOptions`, :func:`check_counts`), and the rule for their output folder (:func:`check_output`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from covid_tf import config
from covid_tf.errors import CovidTfError
from covid_tf.io_utils import check_writable_output, refuse_output_inside_inputs, run_folder_of


def check_counts(batch_size: int, n_bootstrap: int) -> None:
    """``--batch-size`` at least 1 and ``--n-bootstrap`` 0 or more; a ``CovidTfError`` naming the option."""
    if batch_size < 1:
        raise CovidTfError(f"--batch-size must be at least 1, got {batch_size}")
    if n_bootstrap < 0:
        raise CovidTfError(f"--n-bootstrap must be 0 or more, got {n_bootstrap}")


@dataclass(frozen=True)
class CheckOptions:
    """Which images a check reads (as ``evaluate`` selects them), how it computes and what it may do."""

    split_file: str | Path | None = None
    subset: str | None = None  # a part of the split file (train, val, test)
    classes: Sequence[str] | None = None
    class_map: dict[str, str] | None = None
    batch_size: int = config.BATCH_SIZE
    n_bootstrap: int = 1000
    seed: int = config.SEED
    allow_unsafe: bool = False  # load a model with Lambda layers (trusted files only)
    overwrite: bool = False  # replace an earlier check in the output folder

    def __post_init__(self) -> None:
        check_counts(self.batch_size, self.n_bootstrap)


Options = TypeVar("Options", bound="CheckOptions")


def with_settings(options: Options, settings: dict[str, Any]) -> Options:
    """``options`` with some fields given as keywords (checked again); the keywords of the API's callers."""
    return replace(options, **settings) if settings else options


def check_output(out_dir: Path, data: str | Path, model_path: str | Path, overwrite: bool, summary_file: str,
                 what: str) -> None:
    """Refuse an --out inside the data, that is or replaces a file of the model's run folder, an unwritable one,
    or one holding a check (its ``summary_file``) unless ``overwrite``."""
    # The model's run folder is read (its config.json, split.csv): a new folder in it is fine (RUN/occlusion),
    # the folder itself or any of its files is not.
    refuse_output_inside_inputs(out_dir, [data, model_path], read_folders=[run_folder_of(model_path)])
    check_writable_output(out_dir, folder=True)
    if (out_dir / summary_file).exists() and not overwrite:
        raise CovidTfError(f"{out_dir}: already holds {what} ({summary_file}); choose another --out or pass "
                           "--overwrite")

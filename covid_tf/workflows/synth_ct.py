"""``synth-ct``: synthetic chest CT series as DICOM files (:mod:`covid_tf.synthetic.ct`), after the output check
every command runs first (no TensorFlow)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from covid_tf import config
from covid_tf.io_utils import check_writable_output
from covid_tf.workflows.synth import Synthesized, class_list


def synthesize_ct(out: str | Path, *, classes: str | Sequence[str] = config.CT_CLASSES, patients_per_class: int = 3,
                  slices: int = 8, size: int = 64, seed: int = config.SEED, overwrite: bool = False) -> Synthesized:
    """Write ``patients_per_class`` series of ``slices`` slices per class to ``out`` (``metadata``: a row per slice)."""
    from covid_tf.synthetic import ct as synthetic_ct

    check_writable_output(out, folder=True, option="the output folder")
    names = class_list(classes, "COVID,CAP,Normal")
    start = time.perf_counter()
    written = synthetic_ct.generate_ct_dataset(out, classes=names, patients_per_class=patients_per_class,
                                               slices=slices, size=size, seed=seed, overwrite=overwrite)
    return Synthesized(written, names, time.perf_counter() - start)

"""Safe writing: write to a temporary file in the same folder, then rename over the target."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from covid_tf.errors import CovidTfError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file to ``path``; no half-written file remains."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # All suffixes kept (".weights.h5", not ".h5"): Keras picks the format by the file name's ending.
    suffix = ".tmp" + "".join(path.suffixes)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    tmp_path = Path(tmp_name)
    # mkstemp creates the file readable by its owner only; give it the usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, data: object) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def resolved_path(path: str | Path) -> str:
    """The absolute, symlink-free form of ``path`` (``~`` expanded) as a string: the key paths are matched on."""
    return str(Path(path).expanduser().resolve())


def is_within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (both resolved)."""
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
    except ValueError:
        return False
    return True


def run_folder_of(model: str | Path) -> Path:
    """The folder a model file lies in (its run folder: ``config.json``, ``split.csv``, ...), read as an input."""
    return Path(model).expanduser().resolve().parent


def refuse_output_inside_inputs(out: str | Path, inputs: Iterable[str | Path], option: str = "--out", *,
                                folder: bool = True, read_folders: Iterable[str | Path] = ()) -> None:
    """Raise ``CovidTfError`` when ``out`` is an input file or lies inside an input folder, and, for an output
    folder (``folder``), when it is the folder of an input file or an existing file.

    ``read_folders`` are folders the command reads from that may hold new outputs (a model's run folder:
    ``evaluate --out RUN/eval``): ``out`` may not be one of them, nor an existing file anywhere inside one.
    Input folders are never written into: every command checks its output with this before it writes anything.
    """
    out = Path(out).expanduser()
    if folder and out.exists() and not out.is_dir():
        raise CovidTfError(f"{out}: {option} exists and is not a folder")
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir() and is_within(out, path):
            raise CovidTfError(f"{out}: {option} lies inside the input folder {path.resolve()}; choose another "
                               "(nothing is written into input folders)")
        if path.is_file() and out.resolve() == path.resolve():
            raise CovidTfError(f"{out}: {option} is the input file {path} itself; choose another")
        if folder and path.is_file() and out.resolve() == path.resolve().parent:
            raise CovidTfError(f"{out}: {option} is the folder of the input {path}; choose another "
                               "(nothing is written into input folders)")
    for item in read_folders:
        read = Path(item).expanduser().resolve()
        if out.resolve() == read:
            raise CovidTfError(f"{out}: {option} is the folder {read} this command reads from; choose another "
                               "(nothing is written into input folders)")
        if out.is_file() and is_within(out, read):
            raise CovidTfError(f"{out}: {option} would replace a file of the folder {read} this command reads "
                               "from; choose another (nothing read is written over)")


def check_writable_output(out: str | Path, *, folder: bool, option: str = "--out") -> None:
    """Check up front that ``out`` (a folder, or a file when not ``folder``) can be created or replaced.

    A command then stops with one line before any work instead of a traceback at its first write: ``out``
    naming a file where a folder is wanted (or the reverse), a file on the way to it, or a read-only folder.
    """
    out = Path(out).expanduser()
    if folder and out.exists() and not out.is_dir():
        raise CovidTfError(f"{out}: {option} names an existing file, not a folder")
    if not folder and out.is_dir():
        raise CovidTfError(f"{out}: {option} names an existing folder, not a file")
    nearest = out if folder and out.is_dir() else out.parent
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        raise CovidTfError(f"{nearest}: is a file, so {option} {out} cannot be created below it")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise CovidTfError(f"{nearest}: not writable (permission denied), so {option} {out} cannot be written")


def claim_generated_folder(out_dir: Path, marker: str, maker: str, overwrite: bool) -> list[tuple[str, str]]:
    """Let a generator (``maker``) write into ``out_dir``; return the ``(class folder, file name)`` of the images
    its earlier ``metadata.csv`` there lists as ``<class>/images/<file>`` (``[]`` when none; other paths are
    ignored), so that it can remove its own files it does not write again.

    A folder that is not empty and holds no ``marker`` file is someone else's: refused unless ``overwrite`` (and
    then nothing of it is listed for removal). The marker is written before anything else.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise CovidTfError(f"{out_dir}: exists and is not a folder")
    ours = (out_dir / marker).is_file()
    if out_dir.is_dir() and any(out_dir.iterdir()) and not ours and not overwrite:
        raise CovidTfError(f"{out_dir}: folder is not empty and was not made by {maker} (no {marker}); choose an "
                           "empty folder or pass overwrite=True / --overwrite")
    listed: list[str] = []
    if ours and (out_dir / "metadata.csv").is_file():
        try:
            listed = restore_formulas(pd.read_csv(out_dir / "metadata.csv"))["path"].astype(str).tolist()
        except (OSError, ValueError, KeyError, pd.errors.ParserError):
            listed = []
    previous = [(parts[0], parts[2]) for parts in (Path(path).parts for path in listed)
                if len(parts) == 3 and parts[1] == "images" and not {".", ".."} & set(parts)]
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / marker, lambda tmp: tmp.write_text(f"written by {maker}\n"))
    return previous


def natural_key(text: str) -> list:
    """Sort key that orders numbers by value: ``slice2`` before ``slice10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(text))]


def safe_name(text: str, default: str = "") -> str:
    """``text`` with every run of characters other than letters, digits, ``.``, ``_``, ``-`` as one ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._") or default


# A text cell starting with one of these is run as a formula by spreadsheets (CSV injection, OWASP).
FORMULA_STARTS = "=+-@\t\r"
_QUOTED_FORMULA = re.compile(r"^'*[=+\-@\t\r]")  # a formula start, after any quotes already there
_ADDED_QUOTE = re.compile(r"^'+[=+\-@\t\r]")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def neutralise_formulas(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` ready for ``to_csv``: a single quote before every text cell that starts with
    ``= + - @``, a tab or a carriage return (after any quotes: ``'=x`` becomes ``''=x``), so that no
    spreadsheet runs it as a formula. Numeric columns and numbers written as text (``-0.5``) stay as
    they are. Every CSV covid_tf writes goes through this; :func:`restore_formulas` reads back the original."""
    out = table.copy()
    for column in out.columns:
        if pd.api.types.is_object_dtype(out[column]) or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(
                lambda v: "'" + v if isinstance(v, str) and _QUOTED_FORMULA.match(v) and not _NUMBER.match(v) else v)
    return out


def restore_formulas(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (a CSV covid_tf wrote, read back) with the quotes :func:`neutralise_formulas` added removed."""
    for column in table.columns:
        if pd.api.types.is_object_dtype(table[column]) or pd.api.types.is_string_dtype(table[column]):
            table[column] = table[column].map(lambda v: v[1:] if isinstance(v, str) and _ADDED_QUOTE.match(v) else v)
    return table


def csv_text(table: pd.DataFrame, **options) -> str:
    """``table`` as CSV text (no index), formulas neutralised (:func:`neutralise_formulas`)."""
    return neutralise_formulas(table).to_csv(index=False, **options)


def csv_rows(table: pd.DataFrame, header: bool) -> str:
    """``table`` as CSV text with ``\\n`` line ends (rows appended to a file keep one format), formulas
    neutralised."""
    buffer = io.StringIO()
    neutralise_formulas(table).to_csv(buffer, index=False, header=header, lineterminator="\n",
                                      quoting=csv.QUOTE_MINIMAL)
    return buffer.getvalue()


_PROGRESS = {"shown": True}


def show_progress(shown: bool) -> None:
    """Progress bars on (the default: drawn when stderr is a terminal) or off (``-q/--quiet``)."""
    _PROGRESS["shown"] = bool(shown)


def progress_shown() -> bool:
    """False after ``show_progress(False)`` (``-q/--quiet``)."""
    return _PROGRESS["shown"]


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it"):
    """A tqdm bar on stderr, drawn only when stderr is a terminal and progress is shown (not ``--quiet``)."""
    # The plain (console) bar: tqdm.auto warns "IProgress not found" in a notebook without ipywidgets.
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, disable=None if progress_shown() else True)

"""Keep TensorFlow's C++ start-up lines out of the terminal and the notebooks; let real errors through.

TensorFlow 2.21 writes its start-up messages (``WARNING: All log messages before absl::InitializeLog()
...``, ``I0000 ... oneDNN custom operations are on``, ``E0000 ... failed call to cuInit`` on a machine
without a GPU, the CPU-instruction notice) straight to file descriptor 2 before its logging reads
``TF_CPP_MIN_LOG_LEVEL``, so the variable alone does not silence them. Importing this module (the
``covid_tf`` package does) installs an import hook: the first ``import tensorflow``, wherever it
happens, runs with file descriptor 2 redirected to a temporary file, followed by the device listing
that triggers ``cuInit``; then descriptor 2 is restored and every captured line that is not known
start-up noise is written back to it. This module imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType

# absl's log prefix: severity letter, MMDD, time, thread id, file:line]
_ABSL_LINE = re.compile(r"^(?P<severity>[IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.\-]+:\d+\] (?P<message>.*)")
# Warnings and errors that every CPU-only or GPU-less start-up prints and that need no action.
_NOISY_MESSAGES = re.compile(
    r"cuInit|CUDA error|cuda drivers|Unable to register cu(DNN|FFT|BLAS) factory|computation placer|TensorRT"
    r"|oneDNN custom operations|cpu_feature_guard|rebuild TensorFlow"
)
_NOISY_LINES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "To enable the following instructions:",
)


def is_noise(line: str) -> bool:
    """Whether one line of captured stderr is TensorFlow start-up noise (an INFO log or a known warning)."""
    if not line.strip() or line.startswith(_NOISY_LINES):
        return True
    match = _ABSL_LINE.match(line)
    if match is None:
        return False
    return match["severity"] == "I" or bool(_NOISY_MESSAGES.search(match["message"]))


def real_errors(text: str) -> str:
    """The lines of ``text`` that are not start-up noise, newline-terminated."""
    kept = [line for line in text.splitlines() if not is_noise(line)]
    return "".join(f"{line}\n" for line in kept)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Redirect file descriptor 2 to a temporary file; on exit restore it and replay the real errors."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = real_errors(sink.read().decode("utf-8", errors="replace"))
            if kept:
                os.write(2, kept.encode("utf-8"))


class _QuietLoader(importlib.abc.Loader):
    """Runs another loader's ``exec_module`` (TensorFlow's) inside :func:`quiet_stderr`."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with quiet_stderr():
            self._loader.exec_module(module)
            # Listing the devices loads the GPU platform now, inside the redirect (cuInit's error).
            module.config.list_physical_devices()

    def __getattr__(self, name: str):
        return getattr(self._loader, name)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of the first ``import tensorflow`` in :class:`_QuietLoader`, then steps aside."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        uninstall()
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


_FINDER = _QuietFinder()


def install() -> None:
    """Quiet the next first import of TensorFlow (a no-op once TensorFlow is imported)."""
    # Later INFO logs (after TensorFlow's logging starts) follow the usual variable.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if "tensorflow" not in sys.modules and _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    """Remove the import hook."""
    with contextlib.suppress(ValueError):
        sys.meta_path.remove(_FINDER)


install()

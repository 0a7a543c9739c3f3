"""Keep TensorFlow's known C++ start-up and runtime noise out of the terminal; let real errors through.

TensorFlow 2.21 writes its start-up messages (``WARNING: All log messages before absl::InitializeLog()
...``, ``I0000 ... oneDNN custom operations are on``, ``E0000 ... failed call to cuInit`` on a machine
without a GPU, the CPU-instruction notice) straight to file descriptor 2 before its logging reads
``TF_CPP_MIN_LOG_LEVEL``, so the variable alone does not silence them. Importing this module (the
``covid_tf`` package does) installs an import hook: the first ``import tensorflow``, wherever it
happens, runs with file descriptor 2 redirected to a temporary file, followed by the device listing
that triggers ``cuInit``; then descriptor 2 is restored and every captured line that is not known
start-up noise is written back to it. This module imports nothing heavy.

Once training runs, TensorFlow logs two harmless lines at ERROR level: with op determinism on (every run),
tf.data turns the parallel map of the random augmentation into a sequential one and copies the attribute
``use_unbounded_threadpool`` that the sequential op's definition lacks ("Unknown attributes will be ignored"),
and oneDNN hands a boolean op to Eigen ("oneDNN supports DT_BOOL only on platforms with AVX-512. Falling back
..."). The command line (:func:`covid_tf.cli.main`, run as a program) therefore calls :func:`filter_stderr`,
which routes descriptor 2 for the rest of the process through a small forked filter process that drops exactly
the known lines (:func:`is_runtime_noise`) and passes everything else on at once. Why not
``TF_CPP_MIN_LOG_LEVEL=3``: it hides every C++ ERROR line (a GPU out of memory, a cuDNN failure, the kernel
error behind a Python exception), not just these two. Why a process and not a thread: a thread dies with its
process, so the last lines before a crash (an ``F`` check failure, faulthandler's traceback) would be lost; the
filter process outlives it and drains them. On a terminal the filter reads a pseudo-terminal, so progress bars
and ``isatty`` checks still see one.
``TF_CPP_MIN_LOG_LEVEL=0`` (everything, for debugging) leaves stderr unfiltered.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from types import ModuleType
from typing import NoReturn

# absl's log prefix: severity letter, MMDD, time, thread id, file:line]
_ABSL_LINE = re.compile(r"^(?P<severity>[IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.\-]+:\d+\] (?P<message>.*)")
# Warnings and errors that every CPU-only or GPU-less start-up prints and that need no action.
_NOISY_MESSAGES = re.compile(
    r"cuInit|CUDA error|cuda drivers|Unable to register cu(DNN|FFT|BLAS) factory|computation placer|TensorRT"
    r"|oneDNN custom operations|cpu_feature_guard|rebuild TensorFlow"
)
# Logged at ERROR level while training runs, harmless (see the module's docstring); nothing else is dropped then,
# as a CUDA error or cuInit failure after start-up is a real one.
_RUNTIME_MESSAGES = re.compile("|".join(re.escape(message) for message in (
    "NodeDef mentions attribute use_unbounded_threadpool which is not in the op definition",
    "oneDNN supports DT_BOOL only on platforms with AVX-512",
)))
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
    return match["severity"] == "I" or is_runtime_noise(line) or bool(_NOISY_MESSAGES.search(match["message"]))


def is_runtime_noise(line: str) -> bool:
    """Whether one line is a log line of TensorFlow's that is known noise (what :func:`filter_stderr` drops).

    Stricter than :func:`is_noise`: blank lines, INFO logs (``TF_CPP_MIN_LOG_LEVEL`` decides), CUDA errors
    and every other line stay.
    """
    match = _ABSL_LINE.match(line)
    return match is not None and bool(_RUNTIME_MESSAGES.search(match["message"]))


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
# A partial line that may be the start of a log line waits for its end; any other is passed on at once.
_LOG_LINE_START = re.compile(rb"[IWEF]\d")
_FILTER: dict[str, int] = {}  # pid of the filter process and the saved descriptor of the real stderr
FILTER_EXIT_WAIT = 5.0  # seconds the exiting process waits for the filter to pass the last lines on


def forward(source: int, target: int) -> None:
    """Copy descriptor ``source`` to ``target`` until end of file, leaving out :func:`is_runtime_noise` lines.

    Whole lines are judged; the rest of a line is passed on at once (progress bars, prompts) unless it may be
    the start of a log line, which waits for its newline.
    """
    pending, inside_line = b"", False  # inside_line: the start of the current line was passed on already
    while True:
        try:
            chunk = os.read(source, 1 << 16)
        except OSError:  # EIO: a pseudo-terminal whose last writer has closed
            chunk = b""
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        kept = []
        for line in lines:
            if inside_line or not is_runtime_noise(line.rstrip(b"\r").decode("utf-8", "replace")):
                kept.append(line + b"\n")
            inside_line = False
        if pending and (inside_line or not _LOG_LINE_START.match(pending)):
            kept.append(pending)
            pending, inside_line = b"", True
        _write_all(target, b"".join(kept))
    _write_all(target, pending)


def _write_all(target: int, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the reader is gone: nothing to tell
        while data:
            data = data[os.write(target, data):]


def _channel() -> tuple[int, int]:
    """(read, write) ends for the filter: a pseudo-terminal of the same size when stderr is a terminal, else a pipe."""
    if os.isatty(2):
        with contextlib.suppress(OSError, ImportError):
            import fcntl
            import pty
            import termios

            reader, writer = pty.openpty()
            with contextlib.suppress(OSError):
                fcntl.ioctl(writer, termios.TIOCSWINSZ, fcntl.ioctl(2, termios.TIOCGWINSZ, bytes(8)))
            with contextlib.suppress(termios.error):
                modes = termios.tcgetattr(writer)
                modes[1] &= ~termios.OPOST  # bytes pass as written: the real terminal turns \n into \r\n
                termios.tcsetattr(writer, termios.TCSANOW, modes)
            return reader, writer
    return os.pipe()


def _run_filter(reader: int, writer: int, mask: set) -> NoReturn:
    """The forked filter process: forward the parent's stderr until every writer has closed, then exit."""
    try:
        # Ctrl-C reaches the whole process group: the filter stays to pass on what the interrupted parent says.
        # SIGINT is blocked from before the fork until it is ignored here (ignoring drops one already pending).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(writer)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)  # hold none of the parent's stdin and stdout open
        os.dup2(devnull, 1)
        forward(reader, 2)
    finally:
        os._exit(0)


def filter_stderr() -> bool:
    """Route descriptor 2 through a forked filter process that drops :func:`is_runtime_noise` lines, for the rest of
    the process's life (subprocesses inherit it); True when installed.

    Only before TensorFlow is imported and while the process has one thread (forking is safe then), on systems
    with ``fork``, once, and not with ``TF_CPP_MIN_LOG_LEVEL=0``. At exit stderr is given back and the filter is
    waited for (at most :data:`FILTER_EXIT_WAIT` s), so its last lines come before the shell's prompt.
    """
    if (_FILTER or not hasattr(os, "fork") or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0"
            or "tensorflow" in sys.modules or threading.active_count() > 1):
        return False
    sys.stderr.flush()
    reader, writer = _channel()
    # A Ctrl-C between the fork and the filter's ignoring it would kill the filter and every later line with it.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    pid = os.fork()
    if pid == 0:
        _run_filter(reader, writer, mask)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a Ctrl-C that came meanwhile reaches the parent now
    os.close(reader)
    _FILTER.update(pid=pid, saved=os.dup(2))
    os.dup2(writer, 2)
    os.close(writer)
    atexit.register(_stop_filter)
    return True


def _stop_filter() -> None:
    """Give descriptor 2 back to the real stderr and wait until the filter has passed everything on."""
    if not _FILTER:
        return
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os.dup2(_FILTER["saved"], 2)
    os.close(_FILTER["saved"])
    pid = _FILTER.pop("pid")
    _FILTER.clear()
    deadline = time.monotonic() + FILTER_EXIT_WAIT
    while time.monotonic() < deadline:  # a subprocess still writing keeps the filter alive: it then finishes alone
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:  # reaped elsewhere
            return
        time.sleep(0.01)


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

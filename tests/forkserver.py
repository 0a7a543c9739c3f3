"""``python -m covid_tf`` in child processes that start in a fraction of a second.

Importing TensorFlow takes 5-15 s on a busy machine, which a test that kills ``train`` twenty times
cannot pay twenty times. ``ForkServer`` starts one interpreter that imports the heavy third-party
libraries (TensorFlow, Keras, pandas, matplotlib: nothing of ``covid_tf``, so the tests do not depend
on its module paths) and then forks one child per command. Each child runs ``python -m covid_tf ARGS``
exactly as the command line does (``runpy`` on the ``covid_tf`` package, ``SystemExit`` as the exit
status) with its stdout and stderr in files. A child is a real process: SIGKILL stops it at any
instant, with no chance to clean up, and two children run at the same time really race.

Forking after ``import tensorflow`` is safe because nothing has run yet: no TensorFlow thread pool or
eager context exists until the child builds its first tensor.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SERVER = r"""
import ctypes, json, os, runpy, signal, sys, traceback

def die_with_parent():
    # Linux prctl(PR_SET_PDEATHSIG, SIGKILL): a test process that dies takes the server and its children along.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass

die_with_parent()
import tensorflow, keras, pandas, scipy.sparse.csgraph, h5py, PIL.Image  # noqa: F401
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: F401

requests, replies = sys.stdin, os.fdopen(os.dup(1), "w", buffering=1)
devnull = os.open(os.devnull, os.O_RDONLY)
import resource
maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
replies.write(json.dumps({"ready": os.getpid(), "maxrss_kb": maxrss}) + "\n")
for line in requests:
    request = json.loads(line)
    if "wait" in request or "poll" in request:
        pid = request.get("wait") or request.get("poll")
        done, status, usage = os.wait4(pid, 0 if "wait" in request else os.WNOHANG)
        reply = {"code": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss} if done else {"code": None}
        replies.write(json.dumps(reply) + "\n")
        continue
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid:
        replies.write(json.dumps({"pid": pid}) + "\n")
        continue
    code = 1
    try:
        die_with_parent()
        os.dup2(devnull, 0)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            target = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        os.chdir(request["cwd"])
        os.environ.update(request["env"])
        sys.argv = ["covid_tf", *request["argv"]]
        try:
            if request.get("script"):  # a helper script of the tests (e.g. one that saves a special model)
                runpy.run_path(request["script"], run_name="__main__")
            else:
                runpy.run_module("covid_tf", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    finally:
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
"""


@dataclass
class Child:
    """One ``python -m covid_tf`` child of a ``ForkServer``."""

    pid: int
    stdout_path: Path
    stderr_path: Path
    code: int | None = None
    maxrss_kb: int | None = None  # the child's peak resident memory, once it has ended

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


class ForkServer:
    """Start with ``ForkServer(tmp)``; ``start(argv)`` forks a child, ``wait``/``poll``/``kill`` it."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1", "MPLBACKEND": "Agg",
               "PYTHONUNBUFFERED": "1"}
        with open(self.folder / "server.err", "w") as errors:  # the child keeps its own copy of the handle
            self.process = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=errors, env=env, text=True)
        self.count = 0
        ready = self._reply()
        assert "ready" in ready, ready
        self.maxrss_kb = int(ready["maxrss_kb"])  # the server's resident memory, which each child starts with

    def _reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"fork server died: {(self.folder / 'server.err').read_text()[-3000:]}")
        return json.loads(line)

    def _ask(self, request: dict) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._reply()

    def start(self, argv: list[str], env: dict[str, str] | None = None, script: str | Path | None = None) -> Child:
        """Fork ``python -m covid_tf ARGV`` (or ``python SCRIPT ARGV``) and return at once."""
        self.count += 1
        out, err = self.folder / f"child{self.count}.out", self.folder / f"child{self.count}.err"
        reply = self._ask({"argv": [str(a) for a in argv], "stdout": str(out), "stderr": str(err),
                           "cwd": os.getcwd(), "env": env or {}, "script": str(script) if script else None})
        return Child(reply["pid"], out, err)

    def poll(self, child: Child) -> int | None:
        if child.code is None:
            reply = self._ask({"poll": child.pid})
            child.code, child.maxrss_kb = reply["code"], reply.get("maxrss_kb")
        return child.code

    def wait(self, child: Child, timeout: float = 300) -> int:
        deadline = time.monotonic() + timeout
        while self.poll(child) is None:
            if time.monotonic() > deadline:
                self.kill(child)
                raise TimeoutError(f"python -m covid_tf (pid {child.pid}) ran over {timeout} s")
            time.sleep(0.05)
        return child.code

    def kill(self, child: Child) -> int:
        """SIGKILL (when still running) and reap; returns the exit status (-9 when the kill stopped it)."""
        if child.code is None:
            os.kill(child.pid, signal.SIGKILL)
            reply = self._ask({"wait": child.pid})
            child.code, child.maxrss_kb = reply["code"], reply.get("maxrss_kb")
        return child.code

    def run(self, argv: list[str], timeout: float = 300, script: str | Path | None = None) -> Child:
        child = self.start(argv, script=script)
        self.wait(child, timeout)
        return child

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)

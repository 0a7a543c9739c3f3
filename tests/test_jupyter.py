"""Jupyter: `make install` registers the ``covid_tf`` kernel in .venv, and the notebook runner uses it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from covid_tf import notebook_runner

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"


def test_install_registers_the_kernel_and_jupyterlab():
    if not (VENV / ".installed").is_file() or Path(sys.prefix).resolve() != VENV.resolve():
        pytest.skip("not running in the project's .venv (created by `make install`)")
    spec = json.loads((VENV / "share" / "jupyter" / "kernels" / "covid_tf" / "kernel.json").read_text())
    assert spec["display_name"] == "covid_tf" and spec["language"] == "python"
    assert Path(spec["argv"][0]).parent == VENV / "bin"  # the kernel runs the project's Python
    assert (VENV / "bin" / "jupyter-lab").is_file()
    assert notebook_runner.kernel_name() == "covid_tf"


def write_kernel(folder: Path, name: str, python: str) -> None:
    kernel = folder / "kernels" / name
    kernel.mkdir(parents=True)
    spec = {"argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": name,
            "language": "python"}
    (kernel / "kernel.json").write_text(json.dumps(spec))


@pytest.mark.parametrize(("python", "expected"), [(sys.executable, "covid_tf"), ("/no/such/python", "python3")])
def test_runner_prefers_the_project_kernel(tmp_path, monkeypatch, python: str, expected: str):
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    write_kernel(tmp_path, "covid_tf", python)
    assert notebook_runner.kernel_name() == expected


def test_runner_falls_back_to_python3(monkeypatch):
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    def no_such_kernel(self, name):
        raise NoSuchKernel(name)

    monkeypatch.setattr(KernelSpecManager, "get_kernel_spec", no_such_kernel)
    assert notebook_runner.kernel_name() == "python3"

"""Default folders: the checkout when run from source, the working directory for a wheel, never site-packages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from covid_tf import config

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import json; from covid_tf import config; print(json.dumps({name: str(getattr(config, name)) for name in "
         "('WORKSPACE', 'DATA_DIR', 'REPORTS_DIR', 'MODELS_DIR', 'CACHE_DIR', 'RUNS_DIR', 'FIGURES_DIR')}))")


def _installed_copy(tmp_path: Path) -> Path:
    """covid_tf's light modules where a wheel puts them (``.../site-packages/covid_tf``)."""
    site = tmp_path / "venv" / "lib" / "python3" / "site-packages"
    (site / "covid_tf").mkdir(parents=True)
    for name in ("__init__.py", "config.py", "tf_quiet.py", "errors.py"):  # what `import covid_tf.config` runs
        shutil.copy(ROOT / "covid_tf" / name, site / "covid_tf" / name)
    return site


def _paths(site: Path, cwd: Path, **variables: str) -> dict[str, Path]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("COVID_TF_")}
    env.update(PYTHONPATH=str(site), **variables)
    completed = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True,
                               check=True, timeout=60)
    return {name: Path(value) for name, value in json.loads(completed.stdout).items()}


def test_a_wheel_install_writes_into_the_working_directory(tmp_path: Path) -> None:
    site, work = _installed_copy(tmp_path), tmp_path / "work"
    work.mkdir()
    paths = _paths(site, work)
    assert paths["WORKSPACE"] == work.resolve()
    for name, path in paths.items():
        assert path.is_relative_to(work.resolve()), name
        assert not path.is_relative_to(site.resolve()) and "site-packages" not in path.parts, name


def test_covid_tf_home_and_each_folder_variable_win(tmp_path: Path) -> None:
    site, home = _installed_copy(tmp_path), tmp_path / "home"
    paths = _paths(site, tmp_path, COVID_TF_HOME=str(home), COVID_TF_REPORTS_DIR=str(tmp_path / "elsewhere"))
    assert paths["DATA_DIR"] == home.resolve() / "data" and paths["CACHE_DIR"] == home.resolve() / ".cache"
    assert paths["REPORTS_DIR"] == (tmp_path / "elsewhere").resolve()
    assert paths["FIGURES_DIR"] == (tmp_path / "elsewhere").resolve() / "figures"


def test_a_source_checkout_keeps_its_folders() -> None:
    assert config.is_source_checkout(ROOT)
    if "COVID_TF_HOME" not in os.environ:
        assert config.WORKSPACE == ROOT

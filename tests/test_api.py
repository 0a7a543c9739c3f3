"""The Python API: ``from covid_tf import train_run, TrainConfig, load_model, explain, evaluate``, loaded lazily."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A fresh interpreter: what `import covid_tf` loads, then what the API names are.
PROBE = """
import json, sys
import covid_tf
light = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))
from covid_tf import TrainConfig, evaluate, explain, load_model, train_run
from covid_tf.runs import config, inference
from covid_tf.workflows import evaluate as evaluation, train as run
print(json.dumps({
    "light": light,
    "identities": [train_run is run.train_run, TrainConfig is config.TrainConfig, load_model is inference.load_model,
                   evaluate is evaluation.evaluate_model, explain is sys.modules['covid_tf.explain']],
    "explain_plain": not callable(explain) and callable(explain.explain) and callable(explain.get_explainer),
    "all": covid_tf.__all__, "api": sorted(covid_tf._API),
}))
"""


def test_import_is_light_and_the_api_names_load_lazily() -> None:
    completed = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300,
                               cwd=ROOT, check=True)
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["light"] == [], f"import covid_tf loaded {result['light'][:5]}"
    assert all(result["identities"]), result["identities"]
    assert result["explain_plain"]  # a plain module (no __class__ swapped at import): explain.explain(model, images)
    assert set(result["api"]) == {"train_run", "TrainConfig", "load_model", "explain", "evaluate", "software_versions"}
    assert set(result["api"]) <= set(result["all"])


def test_the_package_explains_with_its_function() -> None:
    import keras
    import numpy as np

    from covid_tf import explain, models

    model = models.build_model("small", image_size=32)
    images = np.random.default_rng(0).random((2, 32, 32, 1)).astype("float32")
    heatmaps, classes, probabilities = explain.explain(model, images, method="gradcam")
    expected = explain.get_explainer("gradcam", model).explain(images)[0]
    assert isinstance(model, keras.Model) and heatmaps.shape == (2, 32, 32) and probabilities.shape == (2, 2)
    np.testing.assert_allclose(heatmaps, expected, atol=1e-6)


def test_type_hints_and_the_segmenter_are_package_data() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["covid_tf"] and (ROOT / "covid_tf" / "py.typed").is_file()
    assert "lungs/lung_segmenter.keras" in package_data["covid_tf"]

"""Execute the numbered notebooks top to bottom with papermill (``make demo`` and the tests).

``python -m covid_tf.notebook_runner --profile demo`` generates the synthetic datasets when they
are missing, runs every ``notebooks/NN_*.ipynb`` with the profile's parameters and writes the
executed copies to ``reports/notebooks/`` (figures go to ``reports/figures/`` from the notebooks).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from covid_tf import config

# Parameters injected into every notebook's `parameters` cell, per profile. A notebook ignores
# names it does not define (papermill only warns), so one table serves them all.
PROFILES: dict[str, dict[str, object]] = {
    "demo": {"image_size": 64, "epochs": 8, "batch_size": 32, "smoke": False,
             # ResNet18 takes minutes on a CPU: notebook 07 leaves its two runs out, notebook 08 trains 4 epochs
             "train_resnet18": False, "resnet18_epochs": 4,
             # Notebook 03: one fine-tuning epoch of ResNet50V2 took 35-95 s on two busy cores: 1 in the first run
             # and 1 in the final model's, two grid trials of 1 epoch
             "fine_tune_epochs": 1, "final_fine_tune_epochs": 1, "head_grid": {"learning_rate": [1e-3, 1e-4]},
             "head_grid_epochs": 1,
             # Notebook 05: seed 002's VGG16 took 300 s on the demo's slices, the baseline CNN 30 s (busy cores)
             "ct_model": "baseline"},
    "smoke": {"image_size": 32, "epochs": 1, "fine_tune_epochs": 1, "batch_size": 16, "smoke": True,
              "train_resnet18": False, "resnet18_epochs": 1,
              "head_grid": {"dropout": [0.5]}, "ct_model": "small"},  # notebook 03: one grid trial
}
# Synthetic datasets per profile: (images per class, size).
SYNTHETIC_SIZES = {"demo": (150, 128), "smoke": (24, 64)}
SYNTHETIC_CLASSES = ("COVID", "Normal", "Viral Pneumonia", "Lung Opacity")
# The chest the synthetic CT series cover: the lower and middle chest, where the lesions are (notebook 05 says why).
SYNTHETIC_CT_EXTENT = (0.1, 0.5)
# The Jupyter kernel `make install` registers in .venv (python -m ipykernel install --sys-prefix --name covid_tf).
PROJECT_KERNEL = "covid_tf"
FALLBACK_KERNEL = "python3"
# ipykernel 7 logs "[IPKernelApp] WARNING | Kernel is running over TCP without encryption" at every start; the
# kernel runs on this machine for papermill only. Its own log shows errors still (cell errors are not log lines).
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


def kernel_name() -> str:
    """``covid_tf`` when that kernel is registered and its Python exists, else ``python3``."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(PROJECT_KERNEL)
    except NoSuchKernel:
        return FALLBACK_KERNEL
    return PROJECT_KERNEL if spec.argv and Path(spec.argv[0]).is_file() else FALLBACK_KERNEL


def list_notebooks(folder: Path = config.NOTEBOOKS_DIR) -> list[Path]:
    """The numbered notebooks, in order."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def ensure_synthetic_data(profile: str, data_dir: Path) -> dict[str, str]:
    """Generate the synthetic X-ray (clean and shortcut) and CT datasets if absent; return their paths."""
    from covid_tf.synthetic.xray import generate_dataset

    per_class, size = SYNTHETIC_SIZES[profile]
    paths = {
        "data_dir": data_dir / "synthetic",
        "shortcut_dir": data_dir / "synthetic_shortcut",
        "ct_dir": data_dir / "synthetic_ct",
    }
    if not (paths["data_dir"] / "metadata.csv").is_file():
        generate_dataset(paths["data_dir"], classes=SYNTHETIC_CLASSES, per_class=per_class, size=size,
                         patients_per_class=max(2, per_class // 3), seed=config.SEED, overwrite=True)
    if not (paths["shortcut_dir"] / "metadata.csv").is_file():
        generate_dataset(paths["shortcut_dir"], classes=("COVID", "Normal"), per_class=per_class, size=size,
                         patients_per_class=max(2, per_class // 3), seed=config.SEED + 1,
                         shortcut_class="COVID", shortcut_probability=0.95, overwrite=True)
    try:
        from covid_tf.synthetic.ct import generate_ct_dataset
    except ImportError:
        paths.pop("ct_dir")
    else:
        if not (paths["ct_dir"] / "labels.csv").is_file():
            generate_ct_dataset(paths["ct_dir"], patients_per_class=4 if profile == "smoke" else 8,
                                seed=config.SEED, overwrite=True, extent=SYNTHETIC_CT_EXTENT)
    return {name: str(path) for name, path in paths.items()}


def run_notebook(notebook: Path, output_dir: Path, parameters: dict[str, object], cwd: Path | None = None) -> Path:
    """Execute one notebook with papermill and return the path of the executed copy.

    Only the parameters the notebook declares in its ``parameters`` cell are passed; the kernel is
    :func:`kernel_name`.
    """
    import papermill

    output_dir.mkdir(parents=True, exist_ok=True)
    output = output_dir / notebook.name
    declared = papermill.inspect_notebook(str(notebook))
    passed = {name: value for name, value in parameters.items() if name in declared}
    papermill.execute_notebook(
        str(notebook), str(output), parameters=passed, cwd=str(cwd or notebook.parent),
        kernel_name=kernel_name(), progress_bar=False, log_output=False, extra_arguments=KERNEL_ARGUMENTS,
    )
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="demo")
    parser.add_argument("--only", nargs="*", help="run only notebooks whose name starts with these prefixes")
    parser.add_argument("--data-dir", type=Path, default=config.DATA_DIR)
    parser.add_argument("--output-dir", type=Path, default=config.EXECUTED_NOTEBOOKS_DIR)
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    start = time.perf_counter()
    parameters = {**PROFILES[args.profile], **ensure_synthetic_data(args.profile, args.data_dir)}
    print(f"synthetic data ready ({time.perf_counter() - start:.0f} s)", flush=True)
    failures = 0
    for notebook in list_notebooks():
        if args.only and not any(notebook.name.startswith(prefix) for prefix in args.only):
            continue
        began = time.perf_counter()
        try:
            output = run_notebook(notebook, args.output_dir, parameters)
        except Exception as error:  # report and go on with the next notebook
            failures += 1
            print(f"FAILED {notebook.name}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            continue
        print(f"ran {notebook.name} -> {output} ({time.perf_counter() - began:.0f} s)", flush=True)
    print(f"figures in {config.FIGURES_DIR}; total {time.perf_counter() - start:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

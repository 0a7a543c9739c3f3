"""The lung-ROI experiment: derived datasets per ROI variant, and Grad-CAM lung energy measured on
the full original image.

    python -m covid_tf.lungs.roi_study derive DATA MASKS OUT --variant crop [--classes COVID,Normal]
    python -m covid_tf.lungs.roi_study split SPLIT_CSV DATA DERIVED OUT_CSV
    python -m covid_tf.lungs.roi_study energy RUN DERIVED MASKS OUT_CSV [--class COVID]
    python -m covid_tf.lungs.roi_study figure LUNGS_CSV OUT_PNG [--classes COVID,Normal]
    python -m covid_tf.lungs.roi_study table OUT_MD NAME=RUN:ENERGY_CSV ...

``derive`` writes every image of ``DATA`` under ``OUT`` with the same relative path (so a split
file carries over by rewriting its root), plus ``metadata.csv`` and ``boxes.csv`` (the crop box of
each image in full-image pixels and whether the mask was plausible; implausible masks fall back to
the full image). ``energy`` maps each test heatmap from the derived image back onto the original
image with :func:`covid_tf.lungs.roi.heatmap_to_full` and measures it against the full lung mask.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf.data.images import load_image, save_png
from covid_tf.io_utils import neutralise_formulas
from covid_tf.lungs import masks as lung_masks
from covid_tf.lungs import roi
from covid_tf.lungs.segment import mask_destination

BOX_COLUMNS = ("path", "top", "left", "bottom", "right", "height", "width", "plausible")


def _metadata(root: Path, classes: Sequence[str] | None) -> pd.DataFrame:
    table = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    return table[table["label"].isin(classes)] if classes else table


def derive_one(image_path: Path, mask_path: Path, variant: str, target: Path) -> dict:
    """Write the ROI variant of one image; return its box row (implausible masks: the full image)."""
    image = load_image(image_path, channels=1)
    mask = lung_masks.resize_mask(lung_masks.binarize(load_image(mask_path, channels=1)), *image.shape[:2])
    plausible = lung_masks.describe_mask(mask).plausible
    derived, box = roi.apply_variant(image, mask if plausible else np.zeros_like(mask), variant)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_png(derived, target)
    return dict(zip(BOX_COLUMNS, (str(target), *box, *image.shape[:2], plausible)))


def derive_dataset(root: Path, masks_root: Path, variant: str, out: Path, classes: Sequence[str] | None) -> Path:
    """Write the derived dataset of one variant (same relative paths, metadata.csv, boxes.csv)."""
    table = _metadata(root, classes)
    rows = []
    for relative in table["path"]:
        rows.append(derive_one(root / relative, mask_destination(root / relative, masks_root), variant, out / relative))
    neutralise_formulas(table).to_csv(out / "metadata.csv", index=False)
    neutralise_formulas(pd.DataFrame(rows, columns=list(BOX_COLUMNS))).to_csv(out / "boxes.csv", index=False)
    return out


def rewrite_split(split_csv: Path, root: Path, derived: Path, out_csv: Path) -> Path:
    """A copy of a split file whose image paths point into the derived dataset."""
    table = pd.read_csv(split_csv, dtype=str, keep_default_na=False)
    prefix, replacement = str(root.resolve()), str(derived.resolve())
    table["path"] = [replacement + p[len(prefix):] if p.startswith(prefix) else p for p in table["path"]]
    neutralise_formulas(table).to_csv(out_csv, index=False)
    return out_csv


def _test_rows(run: Path, class_name: str) -> pd.DataFrame:
    split = pd.read_csv(run / "split.csv", dtype=str, keep_default_na=False)
    return split[(split["split"] == "test") & (split["label"] == class_name)].reset_index(drop=True)


def _original_of(derived_path: str, derived: Path, source: Path) -> Path:
    return source / Path(derived_path).resolve().relative_to(derived.resolve())


def lung_energy(run: Path, derived: Path, source: Path, masks_root: Path, class_name: str = "COVID") -> pd.DataFrame:
    """Grad-CAM share inside the lungs of the full original image, per test image of ``class_name``."""
    from covid_tf.evaluation.inference import load_model
    from covid_tf.explain import get_explainer

    loaded = load_model(run / "model.keras")
    explainer = get_explainer("gradcam", loaded.model, batch_size=32)
    boxes = pd.read_csv(derived / "boxes.csv") if (derived / "boxes.csv").is_file() else None
    box_of = {} if boxes is None else {
        str(Path(p).resolve()): record for p, record in zip(boxes["path"], boxes.to_dict("records"))
    }
    paths = _test_rows(run, class_name)["path"].tolist()
    images = np.stack([load_image(p, channels=loaded.channels, size=loaded.image_size) for p in paths])
    heatmaps, _, probabilities = explainer.explain(images, loaded.class_names.index(class_name))
    rows = []
    for path, heatmap, probability in zip(paths, heatmaps, probabilities):
        original = _original_of(path, derived, source) if derived != source else Path(path)
        full_mask = lung_masks.binarize(load_image(mask_destination(original, masks_root), channels=1))
        record = box_of.get(str(Path(path).resolve()))
        box = (0, 0, *full_mask.shape) if record is None else tuple(int(record[k]) for k in BOX_COLUMNS[1:5])
        shape = full_mask.shape if record is None else (int(record["height"]), int(record["width"]))
        full_mask = lung_masks.resize_mask(full_mask, *shape)
        energy = roi.energy_in_mask(roi.heatmap_to_full(heatmap, box, shape), full_mask)
        rows.append({"path": str(original), "energy_in_lungs": energy, "lung_area_fraction": float(full_mask.mean()),
                     f"prob_{class_name}": float(probability[loaded.class_names.index(class_name)])})
    table = pd.DataFrame(rows)
    table["ratio"] = table["energy_in_lungs"] / table["lung_area_fraction"]
    return table


def mask_figure(lungs_csv: Path, out_png: Path, classes: Sequence[str], per_class: int = 20, seed: int = 0) -> Path:
    """Outline overlays of ``per_class`` random images per class from a segment run's lungs.csv."""
    from covid_tf.lungs import scoring

    table = pd.read_csv(lungs_csv)
    table["label"] = [Path(p).parent.parent.name for p in table["path"]]
    chosen = pd.concat([table[table["label"] == c].sample(min(per_class, int((table["label"] == c).sum())),
                                                          random_state=seed) for c in classes])
    panels, titles = [], []
    for row in chosen.itertuples(index=False):
        image = load_image(row.path, channels=1)
        panels.append(scoring.outline_overlay(image, lung_masks.binarize(load_image(row.mask_path, channels=1))))
        verdict = "ok" if row.plausible else f"IMPLAUSIBLE: {row.reason}"
        titles.append(f"{Path(row.path).name} {row.lung_area_fraction:.2f}\n{verdict}"[:70])
    return scoring.save_overlay_grid(panels, titles, out_png, columns=8, title="shipped segmenter on adult dev images")


def table_row(name: str, run: Path, energy_csv: Path) -> dict:
    """One line of the ROI table: test ROC-AUC with its CI, mean lung energy, area and their ratio."""
    metrics = json.loads((run / "metrics.json").read_text())
    test = metrics.get("test", metrics)
    energies = pd.read_csv(energy_csv)
    energy, area = energies["energy_in_lungs"].mean(), energies["lung_area_fraction"].mean()
    low, high = test["ci95"]["roc_auc"]
    return {"variant": name, "test ROC-AUC [95% CI]": f"{test['roc_auc']:.3f} [{low:.3f}, {high:.3f}]",
            "energy in lungs": round(float(energy), 3), "lung area fraction": round(float(area), 3),
            "ratio": round(float(energy / area), 2), "n COVID test": len(energies)}


def write_table(rows: list[dict], out_md: Path) -> str:
    """Write the ROI table as Markdown and return it."""
    frame = pd.DataFrame(rows)
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    body = "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in frame.itertuples(index=False))
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(header + body)
    return header + body


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Lung-ROI experiment helpers.")
    commands = parser.add_subparsers(dest="command", required=True)
    derive = commands.add_parser("derive")
    for name in ("data", "masks", "out"):
        derive.add_argument(name, type=Path)
    derive.add_argument("--variant", choices=roi.VARIANTS, required=True)
    derive.add_argument("--classes", default="COVID,Normal")
    split = commands.add_parser("split")
    for name in ("split_csv", "data", "derived", "out_csv"):
        split.add_argument(name, type=Path)
    energy = commands.add_parser("energy")
    for name in ("run", "derived", "data", "masks", "out_csv"):
        energy.add_argument(name, type=Path)
    energy.add_argument("--class", dest="class_name", default="COVID")
    figure = commands.add_parser("figure")
    figure.add_argument("lungs_csv", type=Path)
    figure.add_argument("out_png", type=Path)
    figure.add_argument("--classes", default="COVID,Normal")
    table = commands.add_parser("table")
    table.add_argument("out_md", type=Path)
    table.add_argument("entries", nargs="+", help="NAME=RUN:ENERGY_CSV")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "derive":
        derive_dataset(args.data, args.masks, args.variant, args.out, args.classes.split(","))
    elif args.command == "split":
        rewrite_split(args.split_csv, args.data, args.derived, args.out_csv)
    elif args.command == "energy":
        table = lung_energy(args.run, args.derived, args.data, args.masks, args.class_name)
        args.out_csv.parent.mkdir(parents=True, exist_ok=True)
        neutralise_formulas(table).to_csv(args.out_csv, index=False)
        print(f"energy in lungs {table['energy_in_lungs'].mean():.3f}, area {table['lung_area_fraction'].mean():.3f}")
    elif args.command == "figure":
        print(mask_figure(args.lungs_csv, args.out_png, args.classes.split(",")))
    else:
        rows = []
        for entry in args.entries:
            name, rest = entry.split("=", 1)
            run, energy_csv = rest.rsplit(":", 1)
            rows.append(table_row(name, Path(run), Path(energy_csv)))
        print(write_table(rows, args.out_md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

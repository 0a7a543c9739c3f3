"""Lung masks for a list of images with a trained U-Net (the shipped one by default).

    python -m covid_tf.lungs.segment IMAGES_OR_DIRS... --out DIR [--model M] [--size 256]

Images are read in threads, resized to ``--size`` for the network and segmented in batches; each
probability map is resized back to the image's own size, post-processed (two largest components,
holes filled) and written as a 0/255 PNG: ``DIR/<Class>/masks/<name>.png`` for an image in a
Radiography-Database ``<Class>/images/`` folder, else ``DIR/masks/<name>.png``. ``DIR/lungs.csv``
lists path, mask_path, lung_area_fraction, components, plausible and reason. Nothing is ever
written into an input folder.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from covid_tf.data import discover
from covid_tf.data.images import load_image, resize_image, save_png
from covid_tf.lungs import masks as lung_masks

SHIPPED_MODEL = Path(__file__).with_name("lung_segmenter.keras")
DEFAULT_SIZE = 256
LUNGS_COLUMNS = ("path", "mask_path", "lung_area_fraction", "components", "plausible", "reason")


def load_segmenter(path: str | Path | None = None):
    """Load a segmenter ``.keras`` file (default: the one shipped with covid_tf)."""
    import keras

    path = Path(path) if path is not None else SHIPPED_MODEL
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no lung segmenter there")
    return keras.models.load_model(path, compile=False)


def mask_destination(image_path: str | Path, out: Path) -> Path:
    """Where the mask of an image goes: the Radiography layout when the image sits in ``images/``."""
    image_path = Path(image_path)
    name = image_path.with_suffix(".png").name
    if image_path.parent.name == "images":
        return out / image_path.parent.parent.name / "masks" / name
    return out / "masks" / name


def check_output_folder(out: Path, inputs: Sequence[str | Path]) -> None:
    """Refuse an output folder that is, or lies inside, an input folder (never write there)."""
    resolved = out.expanduser().resolve()
    for item in inputs:
        folder = Path(item).expanduser().resolve()
        folder = folder if folder.is_dir() else folder.parent
        if resolved == folder or folder in resolved.parents:
            raise ValueError(f"{out}: the output folder lies inside the input folder {folder}; choose another")


def predict_masks(model, images: list[np.ndarray], size: int, batch_size: int = 32) -> list[np.ndarray]:
    """Cleaned bool lung masks, each at its image's own (H, W)."""
    if not images:
        return []
    batch = np.stack([resize_image(image, size) for image in images])
    # Direct calls, not model.predict: predict retraces with (None, None) spatial sizes after a
    # size change, which Keras's bilinear UpSampling2D cannot handle; eager calls take any size.
    starts = range(0, len(batch), batch_size)
    chunks = [np.asarray(model(batch[start : start + batch_size], training=False)) for start in starts]
    probabilities = np.concatenate(chunks)[..., 0]
    results = []
    for image, probability in zip(images, probabilities):
        height, width = image.shape[:2]
        full = resize_image(probability[..., None], (height, width))[..., 0]
        results.append(lung_masks.clean_mask(full))
    return results


def _summary_row(path: str, mask_path: Path, mask: np.ndarray) -> dict:
    summary = lung_masks.describe_mask(mask)
    return {
        "path": path,
        "mask_path": str(mask_path),
        "lung_area_fraction": round(summary.lung_area_fraction, 5),
        "components": summary.components,
        "plausible": summary.plausible,
        "reason": summary.reason,
    }


def segment_paths(
    model, paths: Sequence[str], out: str | Path, size: int = DEFAULT_SIZE, batch_size: int = 32, workers: int = 4
) -> pd.DataFrame:
    """Segment ``paths``, write mask PNGs under ``out`` and return (and write) the lungs.csv table."""
    out = Path(out)
    rows: list[dict] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(paths), batch_size):
            chunk = list(paths[start : start + batch_size])
            images = list(pool.map(lambda p: load_image(p, channels=1), chunk))
            predicted = predict_masks(model, images, size, batch_size)
            destinations = [mask_destination(p, out) for p in chunk]
            for destination in destinations:
                destination.parent.mkdir(parents=True, exist_ok=True)
            list(pool.map(lambda pair: save_png(pair[1].astype(np.uint8) * 255, pair[0]), zip(destinations, predicted)))
            rows.extend(_summary_row(p, d, m) for p, d, m in zip(chunk, destinations, predicted))
    table = pd.DataFrame(rows, columns=list(LUNGS_COLUMNS))
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "lungs.csv", index=False)
    return table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write lung masks and lungs.csv for chest X-rays.")
    parser.add_argument("inputs", nargs="+", help="image files and/or folders")
    parser.add_argument("--out", required=True, help="folder for masks and lungs.csv (not an input folder)")
    parser.add_argument("--model", default=None, help="segmenter .keras file (default: the shipped one)")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="network input size (divisible by 16)")
    parser.add_argument("--batch-size", type=int, default=32)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    check_output_folder(out, args.inputs)
    paths, skipped = discover.list_images(args.inputs)
    for item in skipped:
        print(f"skipped {item.path}: {item.reason}")
    model = load_segmenter(args.model)
    started = time.perf_counter()
    table = segment_paths(model, paths, out, size=args.size, batch_size=args.batch_size)
    seconds = time.perf_counter() - started
    implausible = int((~table["plausible"].astype(bool)).sum())
    print(f"segmented {len(table)} images in {seconds:.1f} s ({len(table) / max(seconds, 1e-9):.1f} images/s); "
          f"{implausible} implausible mask(s); table: {out / 'lungs.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

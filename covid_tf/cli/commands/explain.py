"""``explain``: class activation maps of a saved model over image files, as overlays and a CSV."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from covid_tf import config
from covid_tf.explain.cam_methods import CAM_METHODS, SCORES

HELP = ("Explain images with a saved model: a heatmap overlay PNG per image and explanations.csv with the lung "
        "energy of each image (a lung-ROI run's heatmaps mapped back onto the full image).")
MASK_KINDS = ("lungs", "lesions")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a .keras model file (its run's config.json names the classes)")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders of images")
    parser.add_argument("--out", required=True, type=Path,
                        help="folder to write the overlays and explanations.csv into (not an input folder)")
    parser.add_argument("--method", choices=tuple(CAM_METHODS), default="gradcam",
                        help="the CAM method (default gradcam)")
    parser.add_argument("--score", choices=SCORES, default="logit",
                        help="what gradient methods differentiate: the class logit before the softmax "
                             "(default, as in Selvaraju et al.) or the softmax probability")
    parser.add_argument("--class", dest="class_name", metavar="NAME",
                        help="explain this class for every image (default: each image's predicted class)")
    parser.add_argument("--layer", help="target layer (default: the model's last convolutional layer)")
    parser.add_argument("--masks", type=Path, metavar="DIR",
                        help="folder of masks named like the images (default: the masks/ or lesions/ folder "
                             "beside images/, as in the Radiography Database layout)")
    parser.add_argument("--mask-kind", choices=MASK_KINDS, default="lungs",
                        help="without --masks: lungs (masks/) or lesions (lesions/) beside images/")
    parser.add_argument("--heat-threshold", type=float, default=0.85,
                        help="heatmap threshold of the segmented region and its IoU with the mask (default 0.85)")
    # The old name, kept working: --threshold means a decision threshold in every other command.
    parser.add_argument("--threshold", type=float, dest="heat_threshold", default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)
    parser.add_argument("--panels", action="store_true",
                        help="write the 4-panel figure image | heatmap | overlay | thresholded region "
                             "instead of the overlay alone")
    parser.add_argument("--batch-size", type=int, default=config.BATCH_SIZE, help="images per batch")
    parser.add_argument("--allow-unsafe", action="store_true",
                        help="load models with Lambda layers (runs their code: only for models you trust)")
    parser.add_argument("--overwrite", action="store_true", help="replace the explanations of an earlier run in --out")


def run(args: argparse.Namespace) -> int:
    from covid_tf.io_utils import check_writable_output, refuse_output_inside_inputs, run_folder_of
    from covid_tf.lungs.energy import summarize, summary_line
    from covid_tf.workflows.explain import explain_images

    config.check_sizes(batch_size=args.batch_size)
    refuse_output_inside_inputs(args.out, [*args.inputs, args.model, *([args.masks] if args.masks else [])],
                                read_folders=[run_folder_of(args.model)])
    check_writable_output(args.out, folder=True)

    def report(item) -> None:
        print(f"skipped {item.path}: {item.reason}", file=sys.stderr)

    result = explain_images(
        args.model, args.inputs, args.out, method=args.method, class_name=args.class_name, layer_name=args.layer,
        masks_dir=args.masks, mask_kind=args.mask_kind, threshold=args.heat_threshold, batch_size=args.batch_size,
        panels=args.panels, allow_unsafe=args.allow_unsafe, overwrite=args.overwrite, on_skipped=report,
        score=args.score,
    )
    for note in result.notes:
        print(f"warning: {note}", file=sys.stderr)
    skipped = f", {len(result.skipped)} file(s) skipped" if result.skipped else ""
    print(f"{len(result.table)} image(s) explained with {result.method} on layer {result.layer_name!r} "
          f"into {result.out_dir}{skipped}")
    table = result.table
    copies = set(result.overlap.copies["test_image"]) if result.overlap is not None else set()
    if copies and not table["path"].isin(copies).all():
        print(f"warning: {table['path'].isin(copies).sum()} of {len(table)} images copy the model's training or "
              "validation images (overlap.csv): left out of the numbers below")
        table = table[~table["path"].isin(copies)]
    if "pointing_hit" in table:
        measured = table[table["energy_in_mask"].notna()]
        if measured.empty:
            print("with masks: no image has a usable mask, so no mask measures (see the warnings above)")
        else:
            print(f"with masks (n={len(measured)}): mean energy in mask {measured['energy_in_mask'].mean():.3f} "
                  f"(mask area {measured['mask_area_fraction'].mean():.3f}), pointing game "
                  f"{measured['pointing_hit'].mean():.0%}, IoU {measured['iou'].mean():.3f}")
    print(summary_line(summarize(table), f" (Grad-CAM on {result.layer_name})"))
    if result.backbone_layer is not None:  # lung attention: the pooled layer's heat is in the lungs by construction
        backbone = table.assign(energy_in_lungs=table["backbone_energy_in_lungs"])
        print(summary_line(summarize(backbone), f" (Grad-CAM on the backbone's own last convolutional layer, "
                                                f"{result.backbone_layer})"))
    return 0

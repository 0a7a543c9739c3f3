"""Benchmark: what a second core buys the default model, in inference and in training mode (and a plain ReLU).

Each thread count runs in its own process (TensorFlow's thread pools are fixed at start-up): intra- and inter-op
pools of ``N`` threads, batches of ``--batch`` inputs at ``--size`` px, the default lung-attention baseline with
the fused batch norm (as ``train`` and ``evaluate`` run it); the mean over ``--calls`` calls after one untimed
call. A memory-bound operation gains little from a second core; a compute-bound one about 2x.

Usage: ``python benchmarks/bench_threads.py [--threads 1,2] [--size 128] [--batch 32] [--calls 20]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from common import quiet_tensorflow, table, write_result

quiet_tensorflow()


def measure(threads: int, size: int, batch: int, calls: int) -> dict[str, list[float]]:
    """``{operation: [wall ms, CPU ms] per input}`` in this process, with ``threads`` threads per pool."""
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from covid_tf.models.fused_batch_norm import fuse_batch_norm
    from covid_tf.models.registry import build_model

    model = build_model("baseline", image_size=size, channels=1, num_classes=2, lung_attention=True,
                        normalization="per_image")
    fuse_batch_norm(model)
    rng = np.random.default_rng(0)
    inputs = tf.constant(rng.random((batch, size, size, 2), dtype=np.float32))
    activation = tf.constant(rng.random((batch, size, size, 16), dtype=np.float32))
    operations = {
        "ReLU over a 16-channel activation": (tf.function(tf.nn.relu), activation),
        "forward pass, inference": (tf.function(lambda x: model(x, training=False)), inputs),
        "forward pass, training mode (PreciseBatchNorm)": (tf.function(lambda x: model(x, training=True)), inputs),
    }
    results = {}
    for name, (function, value) in operations.items():
        function(value)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            function(value)
        results[name] = [1000 * (time.perf_counter() - wall) / (calls * batch),
                         1000 * (time.process_time() - cpu) / (calls * batch)]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.size, args.batch, args.calls)))
        return
    counts = [int(part) for part in args.threads.split(",")]
    found = {}
    for count in counts:
        command = [sys.executable, __file__, "--child", str(count), "--size", str(args.size), "--batch",
                   str(args.batch), "--calls", str(args.calls)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        found[count] = json.loads(output.strip().splitlines()[-1])
    rows = []
    for name in found[counts[0]]:
        cells = [f"{found[count][name][0]:.2f} / {found[count][name][1]:.2f}" for count in counts]
        speedup = found[counts[0]][name][0] / found[counts[-1]][name][0]
        rows.append([name, *cells, f"{speedup:.2f}x"])
        print(f"{name:48s} " + "  ".join(f"{c} thread(s): {cell} ms" for c, cell in zip(counts, cells))
              + f"  speed-up {speedup:.2f}x")
    write_result(args.json, {
        "title": "Thread scaling of the default model",
        "summary": "wall / CPU ms per input with 1 and 2 threads",
        "targets": [],
        "tables": [table("ms per input (wall / CPU)", ["operation", *[f"{c} thread(s)" for c in counts],
                                                        "speed-up"], rows)],
        "notes": [f"batches of {args.batch} at {args.size} px, mean of {args.calls} calls"],
    })


if __name__ == "__main__":
    main()

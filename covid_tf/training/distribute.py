"""Scale-out: the ``tf.distribute`` strategy that a training run builds and compiles its model under.

``default``
    TensorFlow's default strategy: one device (the first GPU if there is one, else the CPU);
    ``strategy.scope()`` changes nothing.
``mirrored``
    ``tf.distribute.MirroredStrategy``: one replica per local GPU (or per device given in
    ``devices``, e.g. ``["/cpu:0", "/cpu:1"]`` for logical CPU devices); each batch is split over
    the replicas and the gradients are summed, so one step equals a single-device step on the
    same global batch (for models without BatchNormalization, whose statistics are per replica).
``multiworker``
    ``tf.distribute.MultiWorkerMirroredStrategy``: synchronous data parallelism over several
    machines, configured by the ``TF_CONFIG`` environment variable (``{"cluster": {"worker":
    [...]}, "task": {"type": "worker", "index": i}}``), which must be set on every worker before
    it starts. Every worker runs the same command; only the chief (worker 0) should keep its run
    directory (``is_chief``). With Keras 3.15 ``model.fit`` fails under this strategy
    (keras-team/keras#20585): ``train`` then stops with one error that says so
    (``tests/test_strategy.py`` runs two local workers).

**The one process-wide cache.** :func:`get_strategy` creates a strategy once per process and hands the same one
to every later call with the same name and devices (``train``, each trial of ``tuning``). It is process state on
purpose: TensorFlow sets up a multi-worker cluster's collective ops once per process and refuses to configure
devices after its runtime has started, so a second ``MultiWorkerMirroredStrategy`` cannot be made, and a
strategy's variables must all come from one instance. Logical devices must therefore be set up before the first
TensorFlow operation of the process. Nothing is created at import.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from covid_tf.errors import CovidTfError

STRATEGIES = ("default", "mirrored", "multiworker")

# (name, devices) -> the strategy made by get_strategy: see "The one process-wide cache" above.
_created: dict[tuple[str, tuple[str, ...]], object] = {}


def parse_tf_config(text: str | None = None) -> dict:
    """Read and check ``TF_CONFIG`` (the environment variable when ``text`` is None)."""
    text = os.environ.get("TF_CONFIG") if text is None else text
    if not text:
        raise CovidTfError(
            "--strategy multiworker needs the TF_CONFIG environment variable on every worker, e.g. "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
        )
    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as error:
        raise CovidTfError(f"TF_CONFIG is not valid JSON ({error})") from None
    if not isinstance(tf_config, dict):
        raise CovidTfError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    cluster, task = tf_config.get("cluster"), tf_config.get("task")
    if not isinstance(cluster, dict) or not cluster.get("worker"):
        raise CovidTfError("TF_CONFIG has no 'cluster' with a list of 'worker' addresses")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise CovidTfError("TF_CONFIG has no 'task' with 'type' and 'index'")
    workers = cluster.get(task["type"])
    if not isinstance(workers, list) or not 0 <= int(task["index"]) < len(workers):
        raise CovidTfError(f"TF_CONFIG task {task} does not name one of the cluster's {task['type']!r} entries")
    return tf_config


def is_chief(tf_config: dict | None = None) -> bool:
    """True on the worker that should write the run directory (always True without TF_CONFIG)."""
    if tf_config is None:
        text = os.environ.get("TF_CONFIG")
        if not text:
            return True
        tf_config = parse_tf_config(text)
    task = tf_config.get("task", {})
    if task.get("type") == "chief":
        return True
    has_chief = bool(tf_config.get("cluster", {}).get("chief"))
    return not has_chief and task.get("type") == "worker" and int(task.get("index", 0)) == 0


def get_strategy(name: str = "default", devices: Sequence[str] | None = None):
    """The ``tf.distribute.Strategy`` called ``name`` (one of ``STRATEGIES``), created on the first call and the
    same object on every later call of the process (TensorFlow allows one cluster set-up per process)."""
    if name not in STRATEGIES:
        raise CovidTfError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if devices and name != "mirrored":
        raise CovidTfError(f"devices can only be given with the 'mirrored' strategy, not {name!r}")
    key = (name, tuple(devices or ()))
    if key in _created:
        return _created[key]
    import tensorflow as tf

    if name == "default":
        strategy = tf.distribute.get_strategy()
    elif name == "mirrored":
        if devices:
            known = {device.name.lower() for device in tf.config.list_logical_devices()}
            unknown = [d for d in devices if not d.lower().startswith("/job:") and _canonical(d) not in known]
            if unknown:
                raise CovidTfError(f"device(s) {', '.join(unknown)} not found; this process has "
                                   f"{', '.join(sorted(known))}")
        strategy = tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
    else:
        parse_tf_config()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    _created[key] = strategy
    return strategy


def _canonical(device: str) -> str:
    """``"/cpu:0"`` or ``"CPU:0"`` -> ``"/device:cpu:0"`` (lower case), as logical device names read."""
    text = device.strip().lower().removeprefix("/").removeprefix("device:")
    return f"/device:{text}"

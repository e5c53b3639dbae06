"""Choosing the `tf.distribute` strategy: the paper's synchronous data
parallelism (section 3.3) on one machine or several.

* Several workers in `TF_CONFIG`: `MultiWorkerMirroredStrategy`.
* `--cpu_replicas=N`: the CPU split into N logical devices, mirrored, so
  multi-replica training runs (and is tested) without GPUs.
* Otherwise `MirroredStrategy` over all local GPUs (or the CPU if none).
"""

import json
import os

import tensorflow as tf


class DistributeError(Exception):
    """The requested distribution cannot be set up; the message says why."""


def tf_config():
    """The parsed `TF_CONFIG` environment variable (`{}` when unset)."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DistributeError(f"TF_CONFIG is not valid JSON ({e}): {raw!r}") from None
    if not isinstance(config, dict):
        raise DistributeError(f"TF_CONFIG must be a JSON object. Received: {raw!r}")
    return config


def num_workers(config=None):
    """Machines in the cluster: workers plus the chief, if any."""
    cluster = (tf_config() if config is None else config).get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def task(config=None):
    """`(type, index)` of this process in the cluster; `("worker", 0)` alone."""
    t = (tf_config() if config is None else config).get("task", {})
    return t.get("type", "worker"), int(t.get("index", 0))


def is_chief(config=None):
    """Whether this process writes the run's files: the chief, or worker 0
    when the cluster has no chief (TF's convention)."""
    config = tf_config() if config is None else config
    kind, index = task(config)
    if "chief" in config.get("cluster", {}):
        return kind == "chief"
    return kind == "worker" and index == 0


def split_cpu(replicas):
    """Splits the CPU into `replicas` logical devices.

    Must run before TensorFlow initialises its devices (before any op runs).
    """
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * replicas)
    except RuntimeError as e:
        logical = len(tf.config.list_logical_devices("CPU"))
        if logical == replicas:
            return  # already split this way, e.g. by an earlier call
        raise DistributeError(
            f"--cpu_replicas={replicas} must be applied before TensorFlow "
            f"initialises its devices, but it already has {logical} logical "
            f"CPU device(s) ({e}).") from None


_STRATEGIES = {}


def make_strategy(cpu_replicas=0):
    """The strategy for this process (see the module docstring).

    One per process and setting, reused by later runs in the same process
    (the transfer smoke run trains five models in one): each new
    MirroredStrategy numbers its collective all-reduces from the start again,
    and TensorFlow then matches a new run's all-reduce with an old one of
    another shape ("Shape mismatch in the collective instance").
    """
    key = (cpu_replicas, os.environ.get("TF_CONFIG", ""))
    if key not in _STRATEGIES:
        _STRATEGIES[key] = _new_strategy(cpu_replicas)
    return _STRATEGIES[key]


def _new_strategy(cpu_replicas):
    if num_workers() > 1:
        if cpu_replicas > 1:
            raise DistributeError(
                f"--cpu_replicas={cpu_replicas} splits one machine's CPU; "
                "with several workers in TF_CONFIG each worker uses its local "
                "GPUs (or its CPU as one replica). Drop --cpu_replicas.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if cpu_replicas > 1:
        split_cpu(cpu_replicas)
        devices = [f"/cpu:{i}" for i in range(cpu_replicas)]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.MirroredStrategy()

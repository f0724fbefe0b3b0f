"""Data parallelism over all local devices with ``jax.sharding``: a batch is padded to a multiple
of the device count and split along its first axis; jitted functions then run on every device."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def batch_sharding(devices: list | None = None) -> NamedSharding:
    """Shards the leading (batch) axis over ``devices`` (default: all local devices)."""
    devices = jax.local_devices() if devices is None else devices
    mesh = Mesh(np.asarray(devices), ("batch",))
    return NamedSharding(mesh, PartitionSpec("batch"))


def pad_to_multiple(x: np.ndarray, multiple: int) -> tuple[np.ndarray, int]:
    """Pads the first axis with copies of the last row to a multiple of ``multiple``; returns the
    padded array and the original length."""
    n = x.shape[0]
    rem = (-n) % multiple
    if rem == 0:
        return x, n
    pad = np.repeat(x[-1:], rem, axis=0)
    return np.concatenate([x, pad], axis=0), n


def shard_batch(sharding: NamedSharding, *arrays: np.ndarray) -> tuple[list, int]:
    """Pads each array to the device count and places it sharded; returns (arrays, true length)."""
    count = sharding.mesh.size
    out, n = [], None
    for a in arrays:
        padded, n = pad_to_multiple(np.asarray(a), count)
        out.append(jax.device_put(padded, sharding))
    return out, int(n)

"""A fixed held-out set of blocks that no training stage ever sees.

Whether a block is held out is a pure function of its `block_id` and the fraction: a 64-bit mix
(splitmix64's finaliser) of the id, read as a number in [0, 1), is below `fraction`. So the split
does not depend on the corpus order, the seed or the stage, a block keeps its side when the corpus
grows or is re-sharded, and every stage that evaluates on "held-out blocks" (ICT accuracy now,
REALM's held-out masked-LM later) uses the same blocks. REALM's released code held out the first
5 shards of its pre-training data for the same purpose.
"""

from __future__ import annotations

import numpy as np

from realm_core.errors import RealmError

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(ids: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a fixed, well-spread bijection of 64-bit ids."""
    z = ids.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (z ^ (z >> np.uint64(31))) & _MASK64


def held_out_mask(block_ids: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask: True for the blocks in the held-out set (about `fraction` of them)."""
    if not 0.0 <= fraction < 1.0:
        raise RealmError(f"held-out fraction must be in [0, 1), got {fraction}")
    ids = np.asarray(block_ids).astype(np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        unit = (_mix(ids) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return unit < fraction

"""GatherND with constant indices and batch_dims=0 (the dynamo exporter's x[:, [3, 1]], after a
Transpose): each tuple along the indices' last axis picks the block x[i_0, ..., i_(k-1)] (negative
entries count from the end). At compile time the tuples become block numbers, so it runs as a
Gather of blocks, and its gradient scatter-adds them (a repeated tuple accumulates)."""
from math import prod

import numpy as np

from . import attr, invalid, refuse
from ._layout import constant
from .gather import register_gather


def layout(node, graph, shape) -> tuple[int, int, list[int], int]:
    """Gather's (outer, n, indices, inner) over x viewed as (1, blocks, block size)."""
    if int(attr(node, "batch_dims", 0)) != 0:
        raise refuse(node, f"GatherND with batch_dims={attr(node, 'batch_dims')} (only 0)")
    idx = constant(node, graph, 1, "indices").astype(np.int64)
    k = idx.shape[-1]  # in [1, rank]: onnx's shape inference checked it
    dims = np.array(shape[:k])
    tuples = idx.reshape(-1, k)
    bad = tuples[((tuples < -dims) | (tuples >= dims)).any(axis=1)]
    if bad.size:
        raise invalid(node, f"index {bad[0].tolist()} outside the leading dims {dims.tolist()} of '{node.inputs[0]}'")
    blocks = np.ravel_multi_index(tuple((tuples % dims).T), tuple(dims))
    return 1, int(dims.prod()), [int(b) for b in blocks], prod(shape[k:])


register_gather("GatherND", layout)

"""MatMul with batch dims that broadcast against each other (numpy rules: (2, 1) against (5,),
(2, 3) against (3,)): forward and both gradients, summed over the broadcast batches, against
torch.matmul (see test_ops.run_case; the plain and one-sided cases are in test_ops.py)."""
from __future__ import annotations

import pytest
import torch

from test_ops import rand, run_case


@pytest.mark.parametrize("a_shape, b_shape, kernels", [
    ((2, 1, 3, 4), (5, 4, 2), "simd"), ((3, 1, 2, 4), (1, 2, 4, 3), "scalar"), ((2, 3, 4, 5), (3, 5, 2), "simd"),
    ((1, 2, 3, 4), (2, 4, 5), "simd"), ((4,), (2, 1, 4, 3), "simd")], ids=str)
def test_matmul_broadcast_batches(tmp_path, a_shape, b_shape, kernels):
    run_case(tmp_path, "MatMul", [rand(*a_shape), rand(*b_shape)], torch.matmul, kernels=kernels)

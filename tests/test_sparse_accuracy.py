"""The sparse-update accuracy study (benchmarks/sparse_accuracy.py) end to end on a few samples:
pretrain, export with module names, quantize, fine-tune in the C, score. The figures come from
the full run (`python -m benchmarks.sparse_accuracy`), not from this test."""
from __future__ import annotations

import numpy as np

from benchmarks import shapes, sparse_accuracy


def test_shapes_are_balanced_and_reproducible():
    x, y = shapes.make(shapes.TARGET, 40, seed=3)
    assert x.shape == (40, 3, shapes.SIZE, shapes.SIZE) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [4] * 10
    assert np.array_equal(x, shapes.make(shapes.TARGET, 40, seed=3)[0])
    assert shapes.TARGET.n_classes == 10 and set(shapes.TARGET.classes) <= set(shapes.SOURCE.classes)


def test_study_runs_on_a_few_samples(tmp_path):
    schemes = [s for s in sparse_accuracy.SCHEMES if s.name.startswith(("float32, last", "int8, sparse, float"))]
    rows = sparse_accuracy.study(tmp_path, pretrain_samples=32, samples=16, test_samples=16, pretrain_epochs=1,
                                 epochs=1, schemes=schemes)
    assert [r["scheme"] for r in rows] == [s.name for s in schemes]
    for row in rows:
        assert 0 <= row["accuracy"] <= 1 and row["ram"] > row["params"] > 0
    assert "| int8, sparse, float update" in sparse_accuracy.table(rows)

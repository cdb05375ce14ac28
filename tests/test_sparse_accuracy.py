"""The sparse-update accuracy study (benchmarks/sparse_accuracy.py) end to end on a few samples:
pretrain, export with module names, quantize, fine-tune in the C, score. The figures come from
the full run (`python -m benchmarks.sparse_accuracy`), not from this test; likewise the Cortex-M7
benchmark's schemes (benchmarks/sparse_mcu.py) are only planned here."""
from __future__ import annotations

import numpy as np

import codegen
from benchmarks import shapes, sparse_accuracy, sparse_mcu
from codegen import budget


def test_shapes_are_balanced_and_reproducible():
    x, y = shapes.make(shapes.TARGET, 40, seed=3)
    assert x.shape == (40, 3, shapes.SIZE, shapes.SIZE) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [4] * 10
    assert np.array_equal(x, shapes.make(shapes.TARGET, 40, seed=3)[0])
    assert shapes.TARGET.n_classes == 10 and set(shapes.TARGET.classes) <= set(shapes.SOURCE.classes)


def test_goals_judge_the_budgeted_int8_update():
    """The goals: last layer >= 3 points below full; the budgeted int8 update (the last scheme)
    within the budget, above the int8 last layer and within 1.5 points of full."""
    def rows(last, int8_last, budgeted, ram=200_000):
        accuracy = dict.fromkeys((s.name for s in sparse_accuracy.SCHEMES), 0.5)
        accuracy.update({sparse_accuracy.SCHEMES[0].name: 0.95, sparse_accuracy.SCHEMES[1].name: last,
                         sparse_accuracy.SCHEMES[2].name: int8_last, sparse_accuracy.SCHEMES[-1].name: budgeted})
        return [{"scheme": name, "accuracy": a, "ram": ram} for name, a in accuracy.items()]

    assert sparse_accuracy.goals(rows(0.80, 0.78, 0.94)) == []
    assert sparse_accuracy.goals(rows(0.93, 0.78, 0.94))[0].startswith("last layer only 2.0 points")
    for missed in (rows(0.80, 0.78, 0.93), rows(0.80, 0.78, 0.94, ram=sparse_accuracy.BUDGET + 1)):
        assert sparse_accuracy.goals(missed)[0].startswith("the budgeted sparse int8 update")


def test_study_runs_on_a_few_samples(tmp_path):
    schemes = [s for s in sparse_accuracy.SCHEMES if s.name.startswith(("float32, last", "int8, sparse, float"))]
    rows = sparse_accuracy.study(tmp_path, pretrain_samples=32, samples=16, test_samples=16, pretrain_epochs=1,
                                 epochs=1, schemes=schemes)
    assert [r["scheme"] for r in rows] == [s.name for s in schemes]
    for row in rows:
        assert 0 <= row["accuracy"] <= 1 and row["ram"] > row["params"] > 0
    assert "| int8, sparse, float update" in sparse_accuracy.table(rows)


def test_mcu_schemes_name_real_layers(tmp_path):
    """benchmarks/sparse_mcu.py's channel patterns match the MobileNetV2's layers, and its int8
    sparse scheme fits the budget (the memory plan only; the QEMU run is the benchmark's)."""
    name = next(n for n, o in sparse_mcu.SCHEMES.items() if o.get("update") == "int8" and "train_channels" in o)
    summary = codegen.generate(sparse_mcu.model(tmp_path), tmp_path / "build", loss="cross_entropy", batch=1,
                               federated=False, **sparse_mcu.SCHEMES[name])
    assert budget.ram_bytes(summary["memory"]) <= sparse_mcu.BUDGET

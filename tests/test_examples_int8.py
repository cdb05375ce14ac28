"""examples/personalize_int8, reduced (fewer epochs and user samples): the int8 pipeline runs end
to end (pretrain, quantize with mcutrain, fine-tune in the generated C) and fine-tuning beats
the frozen int8 model. The example's own command checks the full goal (within 1.5 points of the
float backbone)."""
from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_personalize_int8_example(tmp_path):
    example = runpy.run_path(str(ROOT / "examples" / "personalize_int8" / "personalize_int8.py"))
    results = example["main"](pretrain_epochs=2, finetune_epochs=5, user_samples=200, out_dir=str(tmp_path))
    int8, float32 = results["int8"], results["float32"]
    assert int8["tuned"] > int8["frozen"] + 0.05
    assert int8["tuned"] > float32["tuned"] - 0.05
    assert int8["memory"]["frozen_bytes"] < float32["memory"]["frozen_bytes"] / 2

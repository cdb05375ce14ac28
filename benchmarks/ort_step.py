"""Run inside the ORT virtual environment, keeping torch out (it would inflate the process memory):
time onnxruntime-training steps (forward + loss + backward, SGD step, reset gradients) on one
fixed batch; print JSON with the median seconds per step and the peak RSS.
Usage: python ort_step.py ARTIFACTS_DIR LOSS BATCH CLASSES STEPS REPEATS LR"""
import sys
import types

import numpy as np

# onnxruntime (and onnxruntime.training's package __init__) import torch when it is installed;
# it would inflate the measured memory. Block it, and load only the training.api subpackage.
sys.modules["torch"] = None
import onnxruntime as ort  # noqa: E402

_training = types.ModuleType("onnxruntime.training")
_training.__path__ = [f"{ort.__path__[0]}/training"]
sys.modules["onnxruntime.training"] = _training
from onnxruntime.training import api  # noqa: E402
from timing import report  # noqa: E402  (this script's folder is on sys.path)


def main(folder, loss, batch, classes, steps, repeats, lr):
    batch, classes, steps, repeats = int(batch), int(classes), int(steps), int(repeats)
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    state = api.CheckpointState.load_checkpoint(f"{folder}/checkpoint")
    module = api.Module(f"{folder}/training_model.onnx", state, f"{folder}/eval_model.onnx", device="cpu",
                        session_options=so)
    optimizer = api.Optimizer(f"{folder}/optimizer_model.onnx", module)
    optimizer.set_learning_rate(float(lr))
    x = np.load(f"{folder}/x.npy")
    y = (np.arange(batch) % classes).astype(np.int64) if loss == "cross_entropy" else \
        ((np.arange(batch * classes) % 5) * 0.25).astype(np.float32).reshape(batch, classes)
    module.train()

    def step():
        module(x, y)
        optimizer.step()
        module.lazy_reset_grad()

    report(step, steps, repeats)


if __name__ == "__main__":
    main(*sys.argv[1:])

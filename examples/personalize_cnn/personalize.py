"""Personalization of a pretrained CNN on new classes with the generated C (host build).

A small CNN is pretrained in PyTorch on scikit-learn's bundled 8x8 digits 0-4 only (the "factory"
model), exported to ONNX and compiled with `train_last=1`: on the device only the final Linear
layer trains, the convolutions stay frozen in flash. Fine-tuning on the user's samples of all ten
digits teaches it 5-9; held-out accuracy is printed before and after."""
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

import codegen
from codegen.fit import evaluate, fit

BATCH = 16


def data():
    """Digits as (N, 1, 8, 8) float32 in [0, 1]; a fixed shuffled split: 1/3 pretraining pool,
    1/3 the user's fine-tuning samples, 1/3 held out."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    return [(x[part], y[part]) for part in np.array_split(order, 3)]


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * 2 * 2, 10))


def pretrain(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int) -> nn.Module:
    """Ordinary PyTorch training (Adam, batches of 32) on the classes the factory knew, on one
    thread: the model is so small that more threads only add hand-off overhead."""
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    rng = np.random.default_rng(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(epochs):
            for idx in np.array_split(rng.permutation(len(x)), max(1, len(x) // 32)):
                loss = nn.functional.cross_entropy(model(torch.from_numpy(x[idx])), torch.from_numpy(y[idx]))
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def main(pretrain_epochs: int = 30, finetune_epochs: int = 10, out_dir: str | None = None) -> tuple[float, float]:
    (x_pre, y_pre), (x_user, y_user), (x_test, y_test) = data()
    known = y_pre < 5
    model = pretrain(small_cnn(), x_pre[known], y_pre[known], pretrain_epochs)
    out = Path(out_dir or tempfile.mkdtemp(prefix="personalize-"))
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "pretrained.onnx"
    torch.onnx.export(model, (torch.zeros(BATCH, 1, 8, 8),), str(onnx_path), dynamo=True, verbose=False)
    summary = codegen.generate(onnx_path, out / "build", loss="cross_entropy", lr=0.01, momentum=0.9,
                               train_last=1, name="personal")
    mem = summary["memory"]
    print(f"trainable: {', '.join(p['name'] for p in summary['params'])}; RAM: arena {mem['arena_bytes']:,} B + "
          f"parameters {mem['param_bytes']:,} B + momentum {mem['optimizer_state_bytes']:,} B; "
          f"frozen (flash) {mem['frozen_bytes']:,} B")
    trainer = codegen.load_host(out / "build")
    new = y_test >= 5
    before = [evaluate(trainer, x, y).value for x, y in ((x_test, y_test), (x_test[new], y_test[new]))]
    for epoch, result in enumerate(fit(trainer, x_user, y_user, finetune_epochs), 1):
        print(f"fine-tuning epoch {epoch}: {result}")
    after = [evaluate(trainer, x, y).value for x, y in ((x_test, y_test), (x_test[new], y_test[new]))]
    print(f"held-out accuracy, all digits: before {before[0]:.1%}, after {after[0]:.1%}; "
          f"new digits 5-9: before {before[1]:.1%}, after {after[1]:.1%}")
    return before[0], after[0]


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))

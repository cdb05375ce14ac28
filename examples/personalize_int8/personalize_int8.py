"""Personalization on an int8 backbone with the generated C (host build).

The factory pretrains a small CNN in PyTorch on generic handwriting (the bundled 8x8 digits,
upscaled to 16x16, lightly augmented), exports it to ONNX and quantizes it with mcutrain itself
(`generate(quantize="int8", calibration=...)`, calibrated on factory data): frozen layers run in
int8 and take one byte per weight. The user writes differently (slanted, thick strokes, a noisy
sensor), so the frozen model loses accuracy on their data; fine-tuning the head and the last
biases in the C on a few hundred of the user's samples wins it back. The same fine-tune on the
float32 backbone is the reference: the int8 one should come within GOAL points of it.

    python examples/personalize_int8/personalize_int8.py [pretrain_epochs finetune_epochs user_samples]

Prints a table and exits 1 if the goal is missed."""
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import codegen
from codegen.fit import evaluate, fit

EXAMPLES = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(EXAMPLES / "personalize_cnn"))
from personalize import pretrain  # noqa: E402  (Adam, one thread: the factory's training, as there)

DIGITS = EXAMPLES / "digits" / "digits.npz"
BATCH, SIZE = 16, 16
GOAL = 1.5  # points of held-out accuracy the int8 fine-tune may lose against the float one
SELECTION = dict(train_last=1, train_bias_last=2)  # the head, plus the bias of the last convolution
# Not much larger: the quantized model's output keeps its calibrated int8 range, and logits the
# training pushes beyond it saturate with zero gradient (README.md).
LR = 0.01
GENERIC = dict(rotate=(-10, 10), thicken=(0.0, 0.3), noise=0.05)  # the factory's data
USER = dict(rotate=(20, 35), thicken=(0.6, 1.0), noise=0.15)  # this user's handwriting and sensor


def distort(x8: np.ndarray, rng: np.random.Generator, rotate, thicken, noise) -> np.ndarray:
    """8x8 digits -> (N, 1, 16, 16) float32 images: rotated by a random angle (degrees) in
    `rotate`, strokes widened by a random share in `thicken` (blend with a 3x3 dilation), shifted
    by up to a pixel, plus Gaussian noise."""
    n = len(x8)
    img = F.interpolate(torch.from_numpy(x8.reshape(n, 1, 8, 8)), size=SIZE, mode="bilinear", align_corners=False)
    angle = np.deg2rad(rng.uniform(*rotate, n))
    shift = rng.uniform(-1, 1, (n, 2)) * 2 / SIZE
    theta = np.stack([np.stack([np.cos(angle), -np.sin(angle), shift[:, 0]], 1),
                      np.stack([np.sin(angle), np.cos(angle), shift[:, 1]], 1)], 1)
    img = F.grid_sample(img, F.affine_grid(torch.tensor(theta, dtype=torch.float32), list(img.shape),
                                           align_corners=False), align_corners=False)
    share = torch.tensor(rng.uniform(*thicken, n), dtype=torch.float32).view(n, 1, 1, 1)
    img = (1 - share) * img + share * F.max_pool2d(img, 3, 1, 1)
    return (img.numpy() + rng.normal(0, noise, img.shape)).astype(np.float32)


def data(user_samples: int, seed: int = 0):
    """Disjoint digits for the factory (generic style, 8 augmented copies), the user's training
    samples and the user's held-out samples (3 copies each of the remaining digits: >= 1,000)."""
    digits = np.load(DIGITS)
    x, y = digits["x"], digits["y"]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    factory, user, test = order[:900], order[900:900 + user_samples], order[900 + user_samples:]
    factory = np.tile(factory, 8)
    test = np.tile(test, 3)
    return ((distort(x[factory], rng, **GENERIC), y[factory]), (distort(x[user], rng, **USER), y[user]),
            (distort(x[test], rng, **USER), y[test]))


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 2 * 2, 10))


def personalize(onnx_path: Path, out: Path, user, test, epochs: int, **quantize) -> dict:
    """Generate the trainer, then held-out accuracy before and after fine-tuning on `user`, and
    the trainer's memory."""
    summary = codegen.generate(onnx_path, out, loss="cross_entropy", lr=LR, momentum=0.9, batch=BATCH,
                               federated=False, **SELECTION, **quantize)
    trainer = codegen.load_host(out)
    frozen = evaluate(trainer, *test).value
    for _ in fit(trainer, *user, epochs):
        pass
    return {"frozen": frozen, "tuned": evaluate(trainer, *test).value, "memory": summary["memory"],
            "trained": [p["name"] for p in summary["params"]]}


def main(pretrain_epochs: int = 3, finetune_epochs: int = 15, user_samples: int = 400,
         out_dir: str | None = None) -> dict[str, dict]:
    factory, user, test = data(user_samples)
    out = Path(out_dir or tempfile.mkdtemp(prefix="personalize-int8-"))
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "pretrained.onnx"
    model = pretrain(small_cnn(), *factory, pretrain_epochs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: quiet and quick
        torch.onnx.export(model, (torch.zeros(BATCH, 1, SIZE, SIZE),), str(onnx_path), input_names=["x"],
                          opset_version=18, dynamo=False)
    np.savez(out / "calibration.npz", x=factory[0][:256])
    results = {"float32": personalize(onnx_path, out / "float", user, test, finetune_epochs),
               "int8": personalize(onnx_path, out / "int8", user, test, finetune_epochs, quantize="int8",
                                   calibration=out / "calibration.npz")}
    print(f"{len(user[0])} user samples, {len(test[0])} held out; trained in C: {', '.join(results['int8']['trained'])}")
    print("| backbone | frozen | fine-tuned | RAM (arena + params + state) | flash (frozen weights + constants) |")
    print("|---|---|---|---|---|")
    for kind, r in results.items():
        m = r["memory"]
        ram = m["arena_bytes"] + m["param_bytes"] + m["optimizer_state_bytes"]
        print(f"| {kind} | {r['frozen']:.1%} | {r['tuned']:.1%} | {ram:,} B | {m['frozen_bytes'] + m['const_bytes']:,} B |")
    return results


def goal_met(results: dict[str, dict]) -> bool:
    """The int8 fine-tune is within GOAL points of the float one and above the frozen int8 model."""
    q, f = results["int8"], results["float32"]
    return q["tuned"] >= f["tuned"] - GOAL / 100 and q["tuned"] > q["frozen"]


if __name__ == "__main__":
    ok = goal_met(main(*(int(a) for a in sys.argv[1:4])))
    print(f"goal (int8 fine-tune within {GOAL} points of float32): {'met' if ok else 'MISSED'}")
    sys.exit(0 if ok else 1)

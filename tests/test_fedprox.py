"""FedProx (<prefix>_set_prox_mu): after fl_begin_round, 10 steps with mu = 0.1 equal PyTorch
training loss + mu/2 * ||w - w_round||^2, float32 tolerance: each loss within 1e-5 relative
(+1e-6 absolute), final weights within 2e-5 absolute (as tests/test_train_vs_torch.py). Covered:
SGD with momentum and weight decay (gradient fused into the momentum buffer), SGD with weight
decay only (fused into the weights), Adam (not fused). mu = 0 is bit-identical to not calling it
and to a build made with --no-federated."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import compile_model, export_torch

torch = pytest.importorskip("torch", reason="PyTorch is the reference")

STEPS, BATCH, MU, LR = 10, 8, 0.1, 0.05
CASES = {"sgd_momentum_wd": {"momentum": 0.9, "weight_decay": 1e-2},
         "sgd_wd": {"weight_decay": 1e-2},
         "adam": {"optimizer": "adam", "weight_decay": 1e-2}}


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 5))


def batches():
    rng = np.random.default_rng(3)
    return [(rng.normal(size=(BATCH, 12)).astype(np.float32), rng.integers(0, 5, size=BATCH)) for _ in range(STEPS)]


def train(trainer, start: dict, mu: float | None) -> tuple[list[float], dict]:
    """From `start`, a round begun there, mu set unless None: the losses and final weights."""
    trainer.set_params(start)
    trainer.reset_optimizer()
    trainer.begin_round()
    if mu is not None:
        trainer.set_prox_mu(mu)
    losses = [trainer.train_step(x, y) for x, y in batches()]
    return losses, trainer.get_params()


@pytest.mark.parametrize("case", CASES)
def test_fedprox_vs_torch(tmp_path, case):
    options = CASES[case]
    model = mlp()
    path = export_torch(model, torch.zeros(BATCH, 12), tmp_path / "mlp.onnx", dynamo=True)
    trainer = compile_model(path, tmp_path / "build", loss="cross_entropy", lr=LR, **options)
    start = trainer.get_params()
    params = dict(model.named_parameters())
    names = list(start)
    round_start = {n: params[n].detach().clone() for n in names}
    hyper = {k: v for k, v in options.items() if k in ("momentum", "weight_decay")}
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[options.get("optimizer", "sgd")](
        [params[n] for n in names], lr=LR, **hyper)

    plain, plain_final = train(trainer, start, None)
    ours, final = train(trainer, start, MU)
    for step, (x, y) in enumerate(batches()):
        loss = torch.nn.functional.cross_entropy(model(torch.tensor(x)), torch.tensor(y))
        prox = sum(((params[n] - round_start[n]) ** 2).sum() for n in names)
        opt.zero_grad()
        (loss + MU / 2 * prox).backward()
        opt.step()
        assert ours[step] == pytest.approx(loss.item(), rel=1e-5, abs=1e-6), f"step {step}"
    err = max(float(np.abs(final[n] - params[n].detach().numpy()).max()) for n in names)
    moved = max(float(np.abs(final[n] - plain_final[n]).max()) for n in names)
    assert err < 2e-5 and moved > 50 * err, (err, moved)  # the term matters, and matches

    zero, zero_final = train(trainer, start, 0.0)
    assert zero == plain and all(np.array_equal(zero_final[n], plain_final[n]) for n in names)
    if case == "sgd_wd":  # the fused form whose keep factor carries mu: same bits as no FedProx at all
        other = compile_model(path, tmp_path / "nofed", loss="cross_entropy", lr=LR, federated=False, **options)
        other.set_params(start)
        assert [other.train_step(x, y) for x, y in batches()] == plain
        assert all(np.array_equal(other.get_params()[n], plain_final[n]) for n in names)

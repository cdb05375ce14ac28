"""Run in its own process: time PyTorch (eager, CPU, one thread) training steps of a suite model
on one fixed batch, like the others: forward, loss, backward, SGD step. Prints JSON with the
median seconds per step and the process's peak RSS.
Usage: python -m benchmarks.torch_step MODEL BATCH STEPS REPEATS"""
import sys

import numpy as np
import torch

from benchmarks.models import LR, SUITE
from benchmarks.timing import report


def main(name: str, batch: str, steps: str, repeats: str) -> None:
    torch.set_num_threads(1)
    suite = next(s for s in SUITE if s.name == name)
    batch, steps, repeats = int(batch), int(steps), int(repeats)
    model = suite.module().train()
    x = torch.tensor(np.random.default_rng(0).uniform(-1, 1, (batch, *suite.sample)).astype(np.float32))
    if suite.loss == "mse":
        y = torch.tensor(((np.arange(batch * suite.outputs) % 5) * 0.25).astype(np.float32).reshape(batch, -1))
        loss_fn = torch.nn.functional.mse_loss
    else:
        y, loss_fn = torch.arange(batch) % suite.outputs, torch.nn.functional.cross_entropy
    opt = torch.optim.SGD(model.parameters(), lr=LR)

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    report(step, steps, repeats)


if __name__ == "__main__":
    main(*sys.argv[1:])

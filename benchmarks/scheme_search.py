"""How long `inspect --ram-budget` searches sparse update schemes (codegen/sparse_schemes.py) on a
MobileNetV2-class model: MobileNetV2-0.35 at 96x96x3 (benchmarks/int8_fit.py), float32 and int8
(onnxruntime QDQ), batch 1, plain SGD, no federated copy. Per budget: the memory plans the search
made, its CPU seconds (process time, heuristic ranking: no host builds) and the best scheme.

    python -m benchmarks.scheme_search [--calibration data.npz]   # with it, also the CPU time of
                                                                 # the contribution analysis (int8, 256 KiB)
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.int8_fit import MODELS  # noqa: E402
from codegen import api, sparse_schemes, training  # noqa: E402
from codegen.errors import FitError  # noqa: E402

BUDGETS = (192 * 1024, 256 * 1024, 512 * 1024, 1024 * 1024)


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the compilers of host builds)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def search(model: Path, budget: int, data=None) -> tuple[int, float, str]:
    """(memory plans, CPU seconds, the best scheme's RAM and options or the refusal)."""
    plans, plan_graph = [0], api._plan_graph

    def counted(*args):
        plans[0] += 1
        return plan_graph(*args)
    api._plan_graph = counted
    spec = api.Spec("cross_entropy", training.Optimizer(), training.Selection(), 1)
    start = _cpu()
    try:
        best = api._schemes(model, spec, False, budget, data)[0]
        found = f"{best.ram_bytes:,} B: `{best.options}`"
    except FitError as e:
        found = "none fits: " + str(e).split(": ", 1)[1].split(". ")[0]
    finally:
        api._plan_graph = plan_graph
    return plans[0], _cpu() - start, found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibration", type=Path, help=".npz with x (N, 3, 96, 96) and y (class < 10)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="scheme-search-"))
    model = MODELS[0]
    paths = {"float32": model.export(folder)}
    paths["int8"] = model.quantize(paths["float32"])
    print("| model | budget B | plans | CPU s | best scheme |\n|---|---|---|---|---|")
    for kind, path in paths.items():
        for budget in BUDGETS:
            plans, seconds, found = search(path, budget)
            print(f"| {model.name} {kind} | {budget:,} | {plans} | {seconds:.1f} | {found} |")
    if args.calibration:
        wall = time.time()
        plans, seconds, found = search(paths["int8"], 256 * 1024,
                                       sparse_schemes.calibration_data(args.calibration, required=True))
        print(f"contribution analysis, int8, 256 KiB: {plans} plans, {seconds:.0f} CPU s "
              f"({time.time() - wall:.0f} s wall), best {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

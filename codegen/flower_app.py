"""`mcutrain flower-app`: write a Flower App (flwr 1.42) around a build folder and an .npz. The
app's Python files are thin wrappers of codegen.flower; the build and the data are copied into
its `files/` folder, which the run config names by absolute path (Flower ships only .py/.toml/.md
files in the app bundle it runs). Everything is checked before anything is written."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from . import __version__, fit, partition
from .build import load_host
from .errors import OptionError
from .files import write_all
from .manifest import NAME, read as read_manifest

PACKAGE = "mcutrain_flower"
FLOWER = "1.42.0"  # the flwr version the app is written for and tested with
# Run config defaults ([tool.flwr.app.config]); `flwr run --run-config "key=value"` overrides them.
CONFIG = {"num-server-rounds": 3, "local-epochs": 1, "fraction-train": 1.0, "delta": "float",
          "strategy": "fedavg", "partitioning": "iid", "dirichlet-alpha": 0.5, "seed": 0,
          "proximal-mu": 0.0}

CLIENT = '"""The ClientApp: codegen.flower trains the mcutrain host trainer on this node\'s partition."""\n' \
         "from codegen import flower\n\napp = flower.client_app  # an assignment: Flower looks for it in the source\n"
SERVER = '"""The ServerApp: codegen.flower runs the strategy of the run config."""\n' \
         "from codegen import flower\n\napp = flower.server_app\n"

README = """# Flower App for `{name}` (written by `mcutrain flower-app`)

Federated training of the mcutrain C trainer (host build: the same arithmetic as the board) over
{clients} simulated clients with Flower {flower}:

    pip install "mcutrain[flower]"
    flwr run {app}
    flwr run {app} --run-config "num-server-rounds=10 local-epochs=2 strategy='fedadam'"

`flwr run` starts Flower's local SuperLink (it keeps running in the background) and, for each
run, an environment made with uv (flwr's dependencies, downloaded on first use) layered on the
one running `flwr`, which must have mcutrain installed.

The final global model is written to `files/global_model.npz` (load it with `mcutrain train
--params`, `mcutrain export --params`, ...).

Run config (`[tool.flwr.app.config]` in pyproject.toml):

| key | default | meaning |
|---|---|---|
| num-server-rounds | {rounds} | federated rounds |
| local-epochs | {epochs} | epochs each sampled client trains its partition per round |
| lr | {lr} | learning rate of the clients' optimizer (its state is cleared every round) |
| proximal-mu | 0.0 | FedProx: mu of the proximal term mu/2 * ‖w - w_global‖² in the clients' updates (needs a build made with --federated, the default; 0: plain FedAvg training) |
| fraction-train | 1.0 | fraction of the clients sampled per round (training and evaluation) |
| delta | "float" | "float": clients send their weights; "int8": the int8 delta message (`mcutrain delta --int8` bytes), validated like `mcutrain aggregate` (a bad one is logged and left out) |
| strategy | "fedavg" | "fedavg", "fedadam", "fedyogi" (Flower's own; int8 deltas: FedAvg only) |
| partitioning | "iid" | "iid" or "dirichlet" (label skew with `dirichlet-alpha`) |
| dirichlet-alpha | 0.5 | concentration: smaller is more skewed |
| seed | 0 | partitioning and shuffling |
| files | this folder's `files/` | the build and data (absolute path: pass it again if you move the app) |

Partitions: every client first gets one full training batch ({batch} samples) drawn at random,
then the remaining samples are split IID or by Dirichlet(alpha) per class; so every client
trains (no client is empty or skipped). The split is a function of the seed and the client count.

The client count ({clients}) is the `options.num-supernodes` of the `mcutrain-{clients}`
federation in pyproject.toml; Flower {flower} moves that section into its own configuration
(`$FLWR_HOME/config.toml`, default `~/.flwr`) on the first `flwr run`, makes it the default
connection and comments it out here (Flower warns that `options.` entries are deprecated: it still
reads them). Another count for one run: `flwr run {app} --federation-config "num-supernodes=N"`
(at most the number of training batches in the data: every client needs one).
"""


def _pyproject(name: str, clients: int, config: dict) -> str:
    values = "\n".join(f"{key} = {json.dumps(value)}" for key, value in config.items())
    return f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "mcutrain-flower-{name.replace('_', '-').lower()}"
version = "1.0.0"
description = "Federated training of the mcutrain C trainer '{name}' on Flower"
license = "Apache-2.0"
requires-python = ">=3.11"
# Only flwr: Flower installs the others in a fresh environment per run, layered on the running
# one, which has mcutrain ({__version__}) already (it is not on a package index Flower would use).
dependencies = ["flwr[simulation]=={FLOWER}"]

[tool.hatch.build.targets.wheel]
packages = ["{PACKAGE}"]

[tool.flwr.app]
publisher = "mcutrain"
fab-exclude = ["files/**"]

[tool.flwr.app.components]
serverapp = "{PACKAGE}.server_app:app"
clientapp = "{PACKAGE}.client_app:app"

[tool.flwr.app.config]
{values}

[tool.flwr.federations]
default = "mcutrain-{clients}"

[tool.flwr.federations.mcutrain-{clients}]
options.num-supernodes = {clients}
"""


def _npz(x: np.ndarray, y: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    return buf.getvalue()


def write(build_dir: str | Path, data: str | Path, out_dir: str | Path, clients: int = 10) -> Path:
    """Check the build (its manifest and files), the data against the trainer and the client
    count (one full training batch each), then write the app folder as a set."""
    build_dir, out_dir = Path(build_dir), Path(out_dir).resolve()
    manifest = read_manifest(build_dir)
    if clients < 1:
        raise OptionError(f"--clients must be at least 1, got {clients}")
    trainer = load_host(build_dir)
    x, y = fit.load_data(Path(data))
    fit.check(trainer, x, y)
    partition.check(len(x), clients, trainer.train_batch)
    config = {**CONFIG, "lr": float(f"{trainer.get_lr():.7g}"), "files": str(out_dir / "files")}
    readme = README.format(name=manifest.name, clients=clients, flower=FLOWER, app=out_dir, batch=trainer.train_batch,
                           rounds=CONFIG["num-server-rounds"], epochs=CONFIG["local-epochs"], lr=config["lr"])
    files: dict[str, bytes | str] = {
        "pyproject.toml": _pyproject(manifest.name, clients, config), "README.md": readme,
        f"{PACKAGE}/__init__.py": '"""Flower App written by `mcutrain flower-app`."""\n',
        f"{PACKAGE}/client_app.py": CLIENT, f"{PACKAGE}/server_app.py": SERVER,
        "files/data.npz": _npz(x, y)}
    files.update({f"files/build/{rel}": (build_dir / rel).read_bytes() for rel in (*manifest.files, NAME)})
    write_all(out_dir, files)
    return out_dir

"""`mcutrain flower-app`: write a Flower App (flwr 1.42) around a build folder and an .npz. The
app's Python files are thin wrappers of codegen.flower; the build and the data are copied into
its `files/` folder, which the run config names by absolute path (Flower ships only .py/.toml/.md
files in the app bundle it runs). With --board, the federated firmware of that target (partition
0 embedded) is built into files/build/<target>/ and the board plays that client (flower_gateway).
Everything is checked and built before anything is written."""
from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import numpy as np

from . import __version__, firmware, fit, partition
from .build import load_host
from .errors import OptionError
from .files import write_all
from .manifest import NAME, read as read_manifest

PACKAGE = "mcutrain_flower"
FLOWER = "1.42.0"  # the flwr version the app is written for and tested with
# Run config defaults ([tool.flwr.app.config]); `flwr run --run-config "key=value"` overrides them.
CONFIG = {"num-server-rounds": 3, "local-epochs": 1, "fraction-train": 1.0, "delta": "float",
          "strategy": "fedavg", "partitioning": "iid", "dirichlet-alpha": 0.5, "seed": 0,
          "proximal-mu": 0.0, "board": "", "board-serial": "qemu", "board-timeout": 120.0}

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
| board | "{board}" | a target whose federated firmware is in `files/build/<target>/` (`mcutrain flower-app --board`): that board plays client 0; "" for none |
| board-serial | "qemu" | "qemu": run that firmware under QEMU, its UART on a unix socket; else the board's serial device (e.g. "/dev/ttyACM0", set up with `stty -F DEVICE 115200`) |
| board-timeout | 120.0 | seconds the board may take for a round before its reply counts as failed |
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

A board in the round (`mcutrain flower-app --board TARGET`): the firmware in
`files/build/TARGET/firmware.elf` embeds partition 0 of the default partitioning ({batch}-sample
batches, in order, `local-epochs` epochs per round, the build's lr; another partitioning, seed
or client count at run time leaves it training what it embeds) and talks over its UART
(wire format: mcutrain's docs/flower.md). The node of partition 0 relays each round to it: the
global model goes down as a parameter blob, its delta comes back and is checked like `mcutrain
aggregate` checks one; a refused or late one is an error reply the strategy leaves out. Flash the
ELF to a real board and pass `--run-config "board-serial='/dev/ttyACM0'"`, or let QEMU run it.
Its evaluation runs on the host trainer (the same arithmetic on the same samples).
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


def _board_files(build: dict[str, bytes], target: str, x: np.ndarray, y: np.ndarray) -> dict[str, bytes]:
    """The federated firmware of `target` trained on (x, y), built in a scratch copy of the build:
    its files in the build folder (<target>/...)."""
    with tempfile.TemporaryDirectory() as tmp:
        for rel, data in build.items():
            (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / rel).write_bytes(data)
        info = firmware.build(tmp, target, x, y, CONFIG["local-epochs"], harness="federated")
        out = firmware.out_dir(Path(tmp), firmware.targets.load(target))
        return {f"{info['target']}/{name}": (out / name).read_bytes()
                for name in ("harness.c", info["elf"], firmware.INFO)}


def write(build_dir: str | Path, data: str | Path, out_dir: str | Path, clients: int = 10,
          board: str | None = None) -> Path:
    """Check the build (its manifest and files), the data against the trainer and the client
    count (one full training batch each), build the board's firmware if asked, then write the
    app folder as a set."""
    build_dir, out_dir = Path(build_dir), Path(out_dir).resolve()
    manifest = read_manifest(build_dir)
    if clients < 1:
        raise OptionError(f"--clients must be at least 1, got {clients}")
    trainer = load_host(build_dir)
    x, y = fit.load_data(Path(data))
    fit.check(trainer, x, y)
    partition.check(len(x), clients, trainer.train_batch)
    config = {**CONFIG, "lr": float(f"{trainer.get_lr():.7g}"), "files": str(out_dir / "files"), "board": board or ""}
    readme = README.format(name=manifest.name, clients=clients, flower=FLOWER, app=out_dir, batch=trainer.train_batch,
                           rounds=CONFIG["num-server-rounds"], epochs=CONFIG["local-epochs"], lr=config["lr"],
                           board=config["board"])
    build = {rel: (build_dir / rel).read_bytes() for rel in (*manifest.files, NAME)}
    if board:
        first = partition.of_data(y, trainer.classes, clients, trainer.train_batch, CONFIG["partitioning"],
                                  CONFIG["dirichlet-alpha"], CONFIG["seed"])[0]
        build = {**_board_files(build, board, x[first], y[first]), **build}  # the manifest stays last
    files: dict[str, bytes | str] = {
        "pyproject.toml": _pyproject(manifest.name, clients, config), "README.md": readme,
        f"{PACKAGE}/__init__.py": '"""Flower App written by `mcutrain flower-app`."""\n',
        f"{PACKAGE}/client_app.py": CLIENT, f"{PACKAGE}/server_app.py": SERVER,
        "files/data.npz": _npz(x, y)}
    files.update({f"files/build/{rel}": data for rel, data in build.items()})
    write_all(out_dir, files)
    return out_dir

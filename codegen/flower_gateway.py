"""A board in a Flower round: the gateway between the ClientApp (codegen.flower) and a board that
runs the federated harness (`mcutrain build --harness federated`) behind a serial line
(board_link). When the run config names a board (`board` = a target whose federated firmware is
in files/build/<target>/, written by `mcutrain flower-app --board`), the node of partition 0 is
that board: the gateway frames the global model into a parameter blob, the board trains its
embedded samples (partition 0) and answers with its delta, which the gateway checks with
federated.validate, the gate of `mcutrain aggregate`, before replying. A refused or missing
delta becomes an error reply naming the board: the strategy leaves it out and logs it, and the
round goes on with the other clients. Evaluation of that node stays on the host trainer (the
same arithmetic on the same samples): the board only trains."""
from __future__ import annotations

import atexit
import math
from logging import WARNING
from pathlib import Path

from flwr.app import Context, Error, Message
from flwr.common.constant import ErrorCode
from flwr.supercore import log

from . import blob, board_link, federated, firmware, flower, targets
from .errors import McutrainError, OptionError
from .manifest import Manifest, read as read_manifest

PARTITION = 0  # the partition the board plays (its firmware embeds it)
EMULATED = "qemu"  # board-serial value: run the firmware under QEMU instead of opening a device

_boards: dict[tuple[str, str, str], board_link.Board] = {}


def is_board(context: Context) -> bool:
    return bool(str(context.run_config.get("board", ""))) and int(context.node_config["partition-id"]) == PARTITION


def _check_config(cfg, build: Path, target: str, manifest: Manifest) -> None:
    """The board trains as its firmware was built: refuse a run config that asks otherwise."""
    epochs = firmware.read_info(build, targets.load(target))["epochs"]
    wrong = []
    if int(cfg["local-epochs"]) != epochs:
        wrong.append(f"local-epochs={cfg['local-epochs']} (its firmware trains {epochs}; `mcutrain flower-app "
                     "--board` builds it with the app's local-epochs)")
    if not math.isclose(float(cfg["lr"]), manifest.optimizer["lr"], rel_tol=1e-6):
        wrong.append(f"lr={cfg['lr']} (its trainer's is {manifest.optimizer['lr']:g}: `mcutrain generate --lr`)")
    if float(cfg["proximal-mu"]):
        wrong.append("proximal-mu > 0 (the federated harness trains without the proximal term)")
    if wrong:
        raise OptionError(f"the board cannot train with {'; '.join(wrong)}")


def _board(cfg, build: Path, manifest: Manifest) -> board_link.Board:
    """The board of this run config, started (QEMU) or opened (device) on first use, then kept:
    its firmware waits for the next round."""
    target, serial, timeout = str(cfg["board"]), str(cfg["board-serial"]), float(cfg["board-timeout"])
    key = (str(build), target, serial)
    if key not in _boards:
        _boards[key] = (board_link.Board.emulate(build, target, manifest, timeout) if serial == EMULATED
                        else board_link.Board.open(serial, manifest, timeout))
    return _boards[key]


@atexit.register
def close_all() -> None:
    """Stop every board this process started (the firmware exits, QEMU with it)."""
    while _boards:
        _boards.popitem()[1].close()


def _drop(board: board_link.Board) -> None:
    """A board whose line failed starts afresh next round."""
    for key in [k for k, b in _boards.items() if b is board]:
        _boards.pop(key).close()


def train(msg: Message, context: Context) -> Message:
    """One round on the board: the reply has the weights (delta=float) or the board's int8 delta
    message (delta=int8) with its sample count and last-epoch loss, or an error naming the board."""
    cfg = context.run_config
    build = Path(str(cfg["files"])) / flower.BUILD
    manifest = read_manifest(build)
    source = f"board {cfg['board']} (client node {context.node_id})"
    start = flower.arrays(msg.content["arrays"])
    int8 = cfg["delta"] == "int8"
    board = None
    try:
        _check_config(cfg, build, str(cfg["board"]), manifest)
        board = _board(cfg, build, manifest)
        loss, data = board.round(blob.encode_params(start, manifest), int8)
        change, samples = federated.validate(data, manifest, source)
    except McutrainError as e:
        if isinstance(e, board_link.LinkError):
            _drop(board)
        log(WARNING, "round %s: no delta from %s: %s", msg.content["config"]["server-round"], source, e)
        return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{source}: {e}"), reply_to=msg)
    reply = flower.delta_record(data) if int8 else flower.records({n: start[n] + change[n] for n in start})
    return flower.train_reply(msg, reply, samples, loss)

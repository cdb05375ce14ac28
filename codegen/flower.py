"""Flower (flwr 1.42, Message API) logic of the Flower Apps `mcutrain flower-app` writes; the app's
own files only import it, so this is what the tests check.

Client: one loaded C trainer per process serves every virtual client: each message swaps the
global weights in (optimizer state cleared), trains the client's partition and replies with the
weights (Flower's strategies average those) or an int8 delta (the bytes `mcutrain delta --int8`
writes); when the run config names a board, partition 0 is that board behind its serial line
(flower_gateway). Server: Flower's FedAvg/FedAdam/FedYogi on weights, or `Int8FedAvg`, which validates
each delta like `mcutrain aggregate` and drops a bad client instead of the round."""
from __future__ import annotations

import tomllib
from contextlib import contextmanager
from functools import lru_cache
from logging import INFO, WARNING
from pathlib import Path
from typing import Callable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAdam, FedAvg, FedYogi
from flwr.supercore import log
from flwr.supercore.task_identity import TaskIdentity

from . import blob, export, federated, fit, flower_gateway, partition
from .build import HostTrainer, load_host
from .errors import DataError, OptionError
from .manifest import Manifest, read as read_manifest

BUILD, DATA, RESULT = "build", "data.npz", "global_model.npz"  # inside the app's files folder
DELTA = "delta"  # the ArrayRecord entry of an int8 delta message (its bytes as uint8)
STRATEGIES = {"fedavg": FedAvg, "fedadam": FedAdam, "fedyogi": FedYogi}


def records(weights: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({name: Array(np.asarray(value, np.float32)) for name, value in weights.items()})


def arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {name: value.numpy() for name, value in record.items()}


def delta_record(data: bytes) -> ArrayRecord:
    """An int8 delta message as a reply's arrays (Int8FedAvg reads it back with _delta_bytes)."""
    return ArrayRecord({DELTA: Array(np.frombuffer(data, np.uint8))})


def train_reply(msg: Message, reply: ArrayRecord, samples: int, loss: float) -> Message:
    """A train reply: the client's weights or delta, its sample count and last-epoch loss."""
    metrics = MetricRecord({"num-examples": samples, "train-loss": loss})
    return Message(RecordDict({"arrays": reply, "metrics": metrics}), reply_to=msg)


@lru_cache(maxsize=None)
def _trainer(build_dir: str) -> HostTrainer:
    """Compiled and loaded once per process, whatever the number of clients it plays."""
    return load_host(build_dir)


@lru_cache(maxsize=None)
def _partitions(files: str, clients: int, method: str, alpha: float, seed: int) -> tuple:
    trainer = _trainer(str(Path(files) / BUILD))
    x, y = fit.load_data(Path(files) / DATA)
    parts = partition.of_data(y, trainer.classes, clients, trainer.train_batch, method, alpha, seed)
    return tuple((x[idx], y[idx]) for idx in parts)


def _client(context: Context) -> tuple[HostTrainer, np.ndarray, np.ndarray]:
    """The trainer and this node's (x, y): partition `partition-id` of `num-partitions`."""
    cfg, node = context.run_config, context.node_config
    files = str(cfg["files"])
    parts = _partitions(files, int(node["num-partitions"]), str(cfg["partitioning"]),
                        float(cfg["dirichlet-alpha"]), int(cfg["seed"]))
    return (_trainer(str(Path(files) / BUILD)), *parts[int(node["partition-id"])])


def _swap_in(trainer: HostTrainer, weights: dict[str, np.ndarray]) -> None:
    """The global model replaces whatever the previous virtual client left in the trainer."""
    state = {s.name for s in trainer.manifest.state}
    trainer.set_params({n: v for n, v in weights.items() if n not in state})
    if state:
        trainer.set_state({n: weights[n] for n in state})
    trainer.reset_optimizer()


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """`local-epochs` epochs on this client's partition from the global weights in `msg`."""
    if flower_gateway.is_board(context):
        return flower_gateway.train(msg, context)
    cfg = context.run_config
    trainer, x, y = _client(context)
    start = arrays(msg.content["arrays"])
    _swap_in(trainer, start)
    trainer.set_lr(float(cfg["lr"]))
    mu = float(cfg["proximal-mu"])
    if trainer.manifest.federated:  # FedProx pulls towards the global weights: the round start
        trainer.begin_round()
        trainer.set_prox_mu(mu)
    elif mu:
        raise OptionError("proximal-mu needs a build made with --federated (FedProx uses its round-start copy)")
    # The client's own shuffling and Dropout stream, whichever virtual clients ran before it here.
    seed = (int(cfg["seed"]) + 1_000_003 * int(msg.content["config"]["server-round"])
            + int(context.node_config["partition-id"])) % 2**32
    trainer.set_seed(seed)
    epochs = list(fit.fit(trainer, x, y, int(cfg["local-epochs"]), seed))
    samples = len(x)
    if cfg["delta"] == "int8":
        reply = delta_record(blob.encode_delta(federated.delta(trainer.weights(), start), samples,
                                               trainer.manifest, int8=True))
    else:
        reply = records(trainer.weights())
    return train_reply(msg, reply, samples, epochs[-1].loss)


@client_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Loss and accuracy (or MSE) of the global weights on this client's partition."""
    trainer, x, y = _client(context)
    _swap_in(trainer, arrays(msg.content["arrays"]))
    result = fit.evaluate(trainer, x, y)
    metrics = MetricRecord({"num-examples": len(x), "eval-loss": result.loss, result.metric: result.value})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def _delta_bytes(content: RecordDict) -> bytes:
    try:
        return content["arrays"][DELTA].numpy().tobytes()
    except (KeyError, TypeError, ValueError) as e:
        raise federated.Refused(federated.Reason.FORMAT, f"no int8 delta in the reply ({e})") from None


class Int8FedAvg(FedAvg):
    """FedAvg over int8 delta messages: each reply is decoded and checked by federated.validate
    (framing, CRC, model hash, NaN/Inf, duplicates); a refused one is logged with its node and
    left out, the others are averaged by federated.fedavg (the arithmetic of `mcutrain aggregate`)."""

    def __init__(self, manifest: Manifest, **kwargs):
        super().__init__(**kwargs)
        self.manifest = manifest
        self.round_start: dict[str, np.ndarray] = {}

    def configure_train(self, server_round: int, arrays_in: ArrayRecord, config: ConfigRecord, grid: Grid):
        self.round_start = arrays(arrays_in)
        return super().configure_train(server_round, arrays_in, config, grid)

    def aggregate_train(self, server_round: int, replies):
        valid, _ = self._check_and_log_replies(replies, is_train=True, validate=False)
        seen: dict[bytes, str] = {}
        accepted, contents = [], []
        for msg in valid:
            source = f"client node {msg.metadata.src_node_id}"
            try:
                accepted.append(federated.validate(_delta_bytes(msg.content), self.manifest, source, seen=seen))
            except federated.Refused as e:
                log(WARNING, "round %d: refused the reply of %s (%s): %s", server_round, source, e.reason.value, e)
                continue
            contents.append(RecordDict({"metrics": MetricRecord({self.weighted_by_key: accepted[-1][1]})}))
        if not accepted:
            log(WARNING, "round %d: no valid delta; the global model stays as it was", server_round)
            return None, None
        log(INFO, "round %d: averaged %d of %d deltas", server_round, len(accepted), len(valid))
        new = federated.fedavg(self.round_start, accepted)
        return records(new), self.train_metrics_aggr_fn(contents, self.weighted_by_key)


def strategy(cfg: dict, manifest: Manifest):
    """The strategy the run config asks for; int8 deltas are averaged by Int8FedAvg only."""
    name, delta = str(cfg["strategy"]), str(cfg["delta"])
    if name not in STRATEGIES or delta not in ("float", "int8"):
        raise OptionError(f"strategy must be one of {', '.join(STRATEGIES)} and delta float or int8, "
                          f"got strategy '{name}', delta '{delta}'")
    fraction = float(cfg["fraction-train"])
    common = dict(fraction_train=fraction, fraction_evaluate=fraction, min_train_nodes=1,
                  min_evaluate_nodes=1, min_available_nodes=1)
    if delta == "int8":
        if name != "fedavg":
            raise OptionError(f"int8 deltas are averaged by FedAvg only (strategy '{name}' needs delta=float)")
        return Int8FedAvg(manifest, **common)
    return STRATEGIES[name](**common)


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """Rounds from the generated weights; the final global model goes to files/global_model.npz."""
    cfg = context.run_config
    files = Path(str(cfg["files"]))
    manifest = read_manifest(files / BUILD)
    result = strategy(cfg, manifest).start(grid, records(export.initial_params(files / BUILD, manifest)),
                                           num_rounds=int(cfg["num-server-rounds"]))
    if result.arrays is None:
        raise DataError("no round produced a global model")
    blob.write_params(files / RESULT, arrays(result.arrays), manifest)
    log(INFO, "wrote %s", files / RESULT)


class LocalGrid(Grid):
    """A Grid that hands every message to the ClientApp of its node in this process, one after
    the other (no Ray, no SuperLink): the tests and benchmarks/flower_scale.py. Train replies are
    recorded by round as (node, message sent, reply); `tamper(node, reply)` may replace one
    before the strategy sees it (a corrupted client)."""

    def __init__(self, run_config: dict, clients: int, tamper: Callable[[int, Message], Message] | None = None,
                 record: bool = True):
        self.run_config, self.tamper, self.record = run_config, tamper, record
        self.nodes = {100 + k: k for k in range(clients)}
        self.rounds: dict[int, list[tuple[int, Message, Message]]] = {}

    def set_run(self, run):
        raise NotImplementedError

    @property
    def run(self):
        raise NotImplementedError

    def create_message(self, *args, **kwargs):
        raise NotImplementedError

    def push_messages(self, messages):
        raise NotImplementedError

    def pull_messages(self, message_ids):
        raise NotImplementedError

    def get_node_ids(self):
        return list(self.nodes)

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            msg.metadata.__dict__["_message_id"] = f"{node}"  # what a SuperLink assigns
            context = Context(run_id=1, node_id=node, state=RecordDict(), run_config=self.run_config,
                              node_config={"partition-id": self.nodes[node], "num-partitions": len(self.nodes)})
            reply = client_app(msg, context)
            reply.metadata.__dict__["_src_node_id"] = node
            if msg.metadata.message_type == "train":
                reply = self.tamper(node, reply) if self.tamper else reply
                if self.record:
                    self.rounds.setdefault(int(msg.content["config"]["server-round"]), []).append((node, msg, reply))
            replies.append(reply)
        return replies


@contextmanager
def _task_identity():
    """The ids Flower's runtime sets in a ServerApp process (Message() reads them)."""
    saved = TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def simulate(app_dir: Path, clients: int, tamper=None, record: bool = True, **overrides) -> LocalGrid:
    """Run the app's ServerApp over `clients` in-process clients with its run config plus
    `overrides` (as `flwr run --run-config`); the global model lands in files/global_model.npz."""
    config = tomllib.loads((Path(app_dir) / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    grid = LocalGrid({**config, **overrides}, clients, tamper, record)
    with _task_identity():
        server_app(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=grid.run_config))
    return grid

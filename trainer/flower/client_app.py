"""Our Flower ``ClientApp`` (``app``): one handler per site step, in an importable module so that
Flower loads it by reference in every worker (a ClientApp defined in ``__main__`` would be
pickled and re-sent with every message).

Where the work happens depends on the node's ``node_config``:
- ``site-socket`` set (deployment, ``fedtiny site``): the request is handed over a local
  authenticated socket to the site's long-lived worker (``site_worker``), which holds TensorFlow,
  the engine and the site's data; the per-message ``flwr-clientapp`` process that Flower starts
  imports only flwr and NumPy.
- otherwise (simulation): a ``SiteService`` cached in this worker process answers it.
The device is the node's ``device-id`` (deployment) or ``partition-id`` (simulation).
This module must not import TensorFlow.
"""
from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from .messages import HEAD_KINDS, parse_request, reply_content

app = ClientApp()

_SERVICE = None     # simulation: one SiteService (one TF engine) per worker process


def _local_service():
    global _SERVICE
    if _SERVICE is None:
        from .site_service import SiteService

        _SERVICE = SiteService()
    return _SERVICE


def _node_device(context: Context) -> int | None:
    nc = context.node_config
    for k in ("device-id", "partition-id"):
        if k in nc:
            return int(nc[k])
    return None


def _answer(kind: str, msg: Message, context: Context) -> Message:
    weights, config, run = parse_request(msg.content)
    sock = context.node_config.get("site-socket")
    if kind == "hello":
        why = None
        if sock:
            from .site_worker import call

            device, why = call(str(sock), str(context.node_config["site-key"]), ("hello", None, {}, run, None))
        else:
            device = _local_service().hello(_node_device(context))
        return Message(reply_content(device, refused=why), reply_to=msg)
    device = int(config["device"])
    if sock:
        from .site_worker import call

        w, m, a = call(str(sock), str(context.node_config["site-key"]), (kind, weights, config, run, device))
    else:
        w, m, a = _local_service().handle(kind, weights, config, run, device)
    return Message(reply_content(device, w, m, a), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    return _answer("fit", msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return _answer("evaluate", msg, context)


@app.query("hello")
def hello(msg: Message, context: Context) -> Message:
    return _answer("hello", msg, context)


@app.query("finalize")
def finalize(msg: Message, context: Context) -> Message:
    return _answer("finalize", msg, context)



def _relay(kind: str):
    def handler(msg: Message, context: Context) -> Message:
        return _answer(kind, msg, context)

    handler.__name__ = kind
    return handler


for _kind in HEAD_KINDS:       # a board site's requests (fedtiny server --board-run)
    app.query(_kind)(_relay(_kind))

"""``backends.Backend`` over a Flower ``Grid``: the server's requests become Flower messages.

Sites are found by asking every connected node which device it holds (``query.hello``); the
answer maps device -> node id. A site that does not answer a request within ``timeout`` seconds
(killed, hung, network gone) or answers with an error gets a Reply with ``error`` set, and its
node is forgotten; before every request the server asks nodes it does not know yet, so a site
that restarts (a new node id) rejoins at the next request. ``wait`` bounds how long the server
waits for sites that are not connected: for all of them before the first step (then a clear
error names the missing devices), and for the one site a Phase-1 visit or a Phase-3 step needs;
a Phase-2 round goes on with the sites it has.

With node authentication (``fedtiny server --sites``) ``registered`` maps each device to the node id
of its registered key: a node serves exactly the device its key was registered for. A node that
claims another device, or a node the table does not know, is refused and logged once.

A site may itself refuse the run (its hello reply carries ``refused``: its data does not fit the run,
``SiteService.greet``): the server logs it once, is not kept waiting for that device, and every
request to it becomes a failed Reply naming the reason, as for a site that is gone (a Phase-1 visit
skipped, a round without it, its Phase 3 undelivered: ``--resume`` once the site is fixed).
"""
from __future__ import annotations

import time

from flwr.app import Message

from ..backends import Backend, Task
from ..strategies import Reply
from .messages import HELLO, KIND_OF, parse_reply, request_content

HELLO_TIMEOUT = 30.0
SILENT_RETRY = 300.0   # a node that let a request time out is skipped by rounds for this long
PULL_FIRST, PULL_MAX = 0.2, 1.0   # seconds between asks for replies: from 0.2 s, doubling up to 1 s


def exchange(grid, msgs: list, timeout: float, first: float = PULL_FIRST, most: float = PULL_MAX) -> list:
    """Push ``msgs`` through ``grid`` and return the replies that came within ``timeout`` seconds.

    The same contract as Flower's ``Grid.send_and_receive``, which asks for replies every 3 s: here
    the first ask comes ``first`` seconds after the push and the wait between asks doubles up to
    ``most``, so a reply is taken up at most ``most`` seconds after it reached the SuperLink (a
    step that sites answer in a second no longer costs up to 3 s more, in every step of a run),
    while a long wait (a slow or silent site) asks once a second. Returns as soon as every message
    has its reply."""
    if not msgs:
        return []
    ids = set(grid.push_messages(msgs))
    deadline = time.monotonic() + timeout
    out, pause = [], first
    while ids:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(pause, left))
        pause = min(2 * pause, most)
        got = list(grid.pull_messages(ids))
        out += got
        ids -= {m.metadata.reply_to_message_id for m in got}
    return out


def _node_asked(sent: list, reply) -> int:
    """The node the message in ``sent`` that ``reply`` answers was sent to. A site's own
    reply comes from its node, but the SuperLink answers for a node that stopped sending heartbeats
    (Flower's "Node Unavailable" error, source: the SuperLink), so a reply is matched to its request
    by message id; the reply's source node is the fallback."""
    want = getattr(reply.metadata, "reply_to_message_id", None)
    for m in sent:
        if want is not None and getattr(m.metadata, "message_id", None) == want:
            return m.metadata.dst_node_id
    return reply.metadata.src_node_id


class SitesMissing(Exception):
    """Sites that never connected within ``wait`` seconds."""


class FlowerBackend(Backend):
    remote = True

    def __init__(self, grid, run: dict, n_devices: int, timeout: float, wait: float,
                 site_dir: str | None = None, note=print, registered: dict[int, int] | None = None):
        self.grid, self.run, self.n = grid, run, int(n_devices)
        self.timeout, self.wait = float(timeout), float(wait)
        self.site_dir = site_dir            # simulation: where the (local) sites write artifacts
        self.note = note
        self.registered = {int(n): int(d) for d, n in registered.items()} if registered else None   # node -> device
        self.nodes: dict[int, int] = {}     # device -> node id
        self.ignored: set[int] = set()      # nodes that hold no usable device
        self.refused: dict[int, str] = {}   # device -> why its site refused this run (wrong dataset)
        self.silent: dict[int, float] = {}  # node -> when it last let a request time out
        self.sent: list = []                # every message sent (tests inspect them)
        self.received: list = []

    # --- discovery -----------------------------------------------------------------------------
    def discover(self, need: set[int] | None = None, wait: float = 0.0) -> None:
        """Map connected nodes to devices; wait up to ``wait`` s until every device of ``need``
        has a node."""
        deadline = time.monotonic() + wait
        while True:
            online = set(self.grid.get_node_ids())
            self.nodes = {d: n for d, n in self.nodes.items() if n in online}
            now = time.monotonic()
            self.silent = {n: t for n, t in self.silent.items() if n in online and now - t < SILENT_RETRY}
            # a round does not wait for silent nodes; a wait for a missing site asks them again
            skip = set() if (need or set()) - set(self.nodes) and wait > 0 else set(self.silent)
            unknown = sorted(online - set(self.nodes.values()) - self.ignored - skip)
            if unknown:
                msgs = [Message(request_content(None, {}, self.run), dst_node_id=n, message_type=HELLO,
                                group_id="hello") for n in unknown]
                answered = set()
                for msg in exchange(self.grid, msgs, HELLO_TIMEOUT):
                    node = _node_asked(msgs, msg)
                    answered.add(node)
                    if msg.has_error():
                        continue                      # asked again next time
                    try:
                        rec = msg.content["reply"]
                        dev = int(rec["device"])
                        why = " ".join(str(rec["refused"]).split())[:300] if "refused" in rec else None
                    except (KeyError, TypeError, ValueError):
                        self.ignored.add(node)
                        continue
                    if self.registered is not None and self.registered.get(node) != dev and not (why and dev < 0):
                        own = self.registered.get(node)
                        self.note(f"node {node} claims device {dev}, but its key is registered "
                                  + (f"for device {own}" if own is not None else "for no device")
                                  + "; refused")
                        self.ignored.add(node)
                    elif why is not None:             # the site does not serve this run: its data does not fit
                        self.ignored.add(node)
                        held = 0 <= dev < self.n and dev not in self.nodes
                        if held:
                            self.refused[dev] = why
                        self.note(f"site of device {dev if held else '?'} (node {node}) refused the run: {why}")
                    elif not 0 <= dev < self.n:
                        self.note(f"node {node} holds device {dev}, which this {self.n}-device run "
                                  "does not have; ignored")
                        self.ignored.add(node)
                    elif dev in self.nodes and self.nodes[dev] != node:
                        self.note(f"node {node} also claims device {dev} (held by node "
                                  f"{self.nodes[dev]}); ignored")
                        self.ignored.add(node)
                    else:
                        if dev not in self.nodes:
                            self.note(f"site of device {dev} connected (node {node})")
                        self.nodes[dev] = node
                        self.refused.pop(dev, None)   # a site restarted with data that fits
                for n in set(unknown) - answered:
                    self.silent[n] = time.monotonic()
            missing = (need or set()) - set(self.nodes) - set(self.refused)
            if not missing or time.monotonic() >= deadline:
                return
            time.sleep(1.0)

    def connect_all(self) -> None:
        """Wait up to ``wait`` s for a site of every device; SitesMissing names those that did not come."""
        self.discover(set(range(self.n)), self.wait)
        missing = sorted(set(range(self.n)) - set(self.nodes) - set(self.refused))
        if missing:
            raise SitesMissing(f"no site connected for device(s) {', '.join(map(str, missing))} within "
                               f"--wait {self.wait:g} s ({len(self.nodes)} of {self.n} connected); start "
                               "`fedtiny site --device-id K ...` for each, or raise --wait")

    # --- requests ------------------------------------------------------------------------------
    def _send(self, kind: str, tasks: list[Task], wait: float = 0.0) -> list[Reply]:
        self.discover({t.device for t in tasks}, wait)
        by_msg, out = {}, {}
        msgs = []
        for t in tasks:
            node = self.nodes.get(t.device)
            if node is None:
                why = self.refused.get(t.device)
                out[t.device] = Reply(t.device, error=f"site refused the run ({why})" if why else "site not connected")
                continue
            conf = {**t.config, "device": t.device}
            if self.site_dir is not None:
                conf["site_dir"] = self.site_dir
            msg = Message(request_content(t.weights, conf, self.run), dst_node_id=node,
                          message_type=KIND_OF[kind], group_id=str(t.config.get("round", t.config.get("phase", ""))))
            msgs.append(msg)
            by_msg[node] = t.device
        self.sent += msgs
        t0 = time.monotonic()
        replies = exchange(self.grid, msgs, self.timeout)
        self.received += replies
        for msg in replies:
            dev = by_msg.get(_node_asked(msgs, msg))
            if dev is not None:
                out[dev] = parse_reply(msg, dev)
        for t in tasks:
            if t.device not in out:
                out[t.device] = Reply(t.device, error=f"no reply within {self.timeout:g} s "
                                                       f"(waited {time.monotonic() - t0:.0f} s)")
        for dev, rep in out.items():
            if not rep.ok and dev in self.nodes:
                node = self.nodes.pop(dev)    # ask again who is there before the next request
                if rep.error.startswith("no reply"):
                    self.silent[node] = time.monotonic()
        return [out[t.device] for t in tasks]

    def fit(self, tasks):
        phase1 = any(t.config.get("phase") == "phase1" for t in tasks)
        return self._send("fit", tasks, self.wait if phase1 else 0.0)

    def evaluate(self, tasks):
        return self._send("evaluate", tasks)

    def finalize(self, tasks):
        return self._send("finalize", tasks, self.wait)

    def ask(self, kind: str, tasks: list[Task], wait: float = 0.0) -> list[Reply]:
        """Any request kind of ``messages.KIND_OF`` (a board site's), waiting up to ``wait`` s for
        sites that are not connected."""
        return self._send(kind, tasks, wait)

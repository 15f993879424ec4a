"""The SuperLink's Control API (submit, stop, list runs, register nodes) answers this machine only.
Flower 1.42 serves it on the same socket as the Fleet API the sites use (trainer/flower/
control_guard.py says where in Flower's source), so fedtiny's SuperLink refuses Control requests
from any other peer: shown on 127.0.0.1 by a client whose source is this machine's external address."""
from __future__ import annotations

import http.client
import socket

import pytest

pytest.importorskip("flwr")


def test_local_peers():
    from fedtiny.trainer.flower.control_guard import is_local_peer, own_addresses

    assert is_local_peer("127.0.0.1", set()) and is_local_peer("::1", set()) and is_local_peer("::ffff:127.0.0.5", set())
    assert not is_local_peer("192.0.2.7", set()) and not is_local_peer(None, set()) and not is_local_peer("x", set())
    assert is_local_peer("192.0.2.7", {"192.0.2.7"})              # a connection from this machine to its --host
    assert own_addresses("0.0.0.0") == set() and own_addresses("10.1.2.3") == {"10.1.2.3"}
    assert "127.0.0.1" in own_addresses("localhost")


def _external_address() -> str | None:
    """This machine's address on its default route (no packet is sent), None when it has none."""
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.connect(("192.0.2.1", 9))
        addr = u.getsockname()[0]
    except OSError:
        return None
    finally:
        u.close()
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr


def _post(port: int, path: str, source: str | None = None) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0) if source else None)
    try:
        c.request("POST", path, body=b"{}", headers={"content-type": "application/json"})
        return c.getresponse().status
    finally:
        c.close()


def test_the_control_api_refuses_a_peer_that_is_not_this_machine(tmp_path):
    from flowerfixture import Cluster, is_loopback_address, listening_sockets, process_tree

    ext = _external_address()
    if ext is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    with Cluster(tmp_path) as c:
        port = c.superlink()
        link = c.procs[-1]
        assert all(is_loopback_address(a) for a, _, _ in listening_sockets(process_tree(link.pid)))
        assert _post(port, "/v1/control/list-runs") == 415   # this machine: Flower answers (it wants protobuf)
        assert _post(port, "/v1/control/list-runs", ext) == 403            # another peer: refused
        assert _post(port, "/v1/control/start-run", ext) == 403
        assert _post(port, "/v1/fleet/send-node-heartbeat", ext) == 415   # the sites' API: Flower answers
        assert link.poll() is None
    log = (tmp_path / "superlink.log").read_text()
    assert log.count(f"refused a Control API request from {ext}") == 1, log[-2000:]

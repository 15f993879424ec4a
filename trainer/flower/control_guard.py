"""The SuperLink's Control API answers this machine only: fedtiny's ``flower-superlink``.

Flower 1.42 cannot bind its Control API apart from the Fleet API the sites connect to. Its
``flower-superlink`` serves the Control API (``/v1/control/...``: start-run, stop-run, list-runs,
stream-logs, pull-artifacts, register-node, ...), the Fleet API (``/v1/fleet/...``) and the Runtime
API from one FastAPI app (``flwr/superlink/main.py``, ``create_app``: ``include_router(control_router)``
and ``include_router(fleet_router)`` on the same app) that one uvicorn server listens for on
``--host:--port`` (``flwr/superlink/cli/flower_superlink.py``, ``_run_superlink_http_api``:
``uvicorn.run(app=fastapi_app, host=lifespan_config.host, port=lifespan_config.port, ...)``).
``--control-api-address`` is deprecated ("The Control API now operates over HTTP. Use `--host` and
`--port` instead.") and only places the legacy gRPC Control server, which starts only when the
internal environment variable ``FLWR_INTERNAL_GRPC_CONTROL_API=1`` is set
(``SuperLinkLifespan.startup``), beside the HTTP one, never instead of it. So whoever reaches the port
the sites use reaches the Control API.

What fedtiny does instead: its SuperLink is Flower's command with one ASGI middleware added through
Flower's own extension hook (``flwr.superlink.extensions.get_middleware``, empty unless Flower's
enterprise package is installed). A Control API request whose TCP peer is neither a loopback
address nor an address of the SuperLink's own ``--host`` (a connection from this machine to that
address has it as its source) is answered 403 and logged once per peer; Fleet and Runtime requests
pass unchanged. uvicorn takes a peer from X-Forwarded-For only when the connection comes from
127.0.0.1, so a remote peer cannot claim to be local.
"""
from __future__ import annotations

import ipaddress
import socket
import sys

CONTROL_PREFIX = "/v1/control"


def own_addresses(host: str) -> set[str]:
    """The addresses ``host`` (the SuperLink's --host) stands for; none for a wildcard (0.0.0.0,
    ::), whose local clients connect through loopback."""
    if host in ("0.0.0.0", "::", ""):
        return set()
    try:
        return {str(ipaddress.ip_address(host.strip("[]")))}
    except ValueError:
        pass
    try:
        return {str(ipaddress.ip_address(a[4][0].split("%")[0])) for a in socket.getaddrinfo(host, None)}
    except (OSError, ValueError):
        return set()


def is_local_peer(peer: str | None, own: set[str]) -> bool:
    """Whether a connection from ``peer`` comes from this machine: a loopback address (IPv4-mapped
    included) or one of ``own``."""
    if not peer:
        return False
    try:
        ip = ipaddress.ip_address(peer.split("%")[0])
    except ValueError:
        return False
    ip = getattr(ip, "ipv4_mapped", None) or ip
    return ip.is_loopback or str(ip) in own


class LocalControlOnly:
    """ASGI middleware: Control API requests from a peer that is not local (``is_local_peer``) get
    403; everything else goes on to ``app``."""

    def __init__(self, app, own: frozenset = frozenset(), log=None):
        self.app, self.own, self.log = app, set(own), log
        self.refused: set[str] = set()

    async def __call__(self, scope, receive, send):
        if scope.get("type") == "http" and str(scope.get("path", "")).startswith(CONTROL_PREFIX):
            peer = (scope.get("client") or (None,))[0]
            if not is_local_peer(peer, self.own):
                if peer not in self.refused and self.log is not None:
                    self.refused.add(peer)
                    self.log(f"fedtiny: refused a Control API request from {peer} (only this machine may "
                             f"submit or control runs): {scope.get('method')} {scope.get('path')}")
                body = b"the Control API of this SuperLink answers this machine only\n"
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def _host_arg(argv: list[str]) -> str:
    """The value of --host in ``argv`` (flower-superlink's default 127.0.0.1 when absent)."""
    for i, a in enumerate(argv):
        if a == "--host" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--host="):
            return a.split("=", 1)[1]
    return "127.0.0.1"


def main() -> None:
    """``flower-superlink`` with ``LocalControlOnly`` in front of its HTTP APIs (module doc)."""
    from starlette.middleware import Middleware

    from flwr.superlink import extensions
    from flwr.superlink.cli.flower_superlink import flower_superlink

    own = frozenset(own_addresses(_host_arg(sys.argv[1:])))
    theirs = extensions.get_middleware

    def get_middleware():
        return (Middleware(LocalControlOnly, own=own, log=lambda s: print(s, file=sys.stderr, flush=True)),
                *theirs())

    extensions.get_middleware = get_middleware
    sys.argv[0] = "flower-superlink"
    flower_superlink()


if __name__ == "__main__":
    main()

"""Start, wait for and stop the Flower processes of a deployment (SuperLink, SuperNode,
``flwr run``), and write the small files they read (the app folder and ``$FLWR_HOME``).

Every process starts in its own session (process group) and with a parent-death signal (Linux),
so stopping ours, or our dying, takes its children (the ServerApp / ClientApp processes Flower
spawns) with it. Readiness is a TCP connect to the process's port; waiting gives up when the
process exits or the deadline passes.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

APP_PYPROJECT = '''[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedtiny-federation"
version = "1.0.0"
description = "fedtiny's ServerApp and ClientApp; their code is the installed fedtiny package"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "fedtiny"

[tool.flwr.app.components]
serverapp = "fedtiny.trainer.flower.server_app:app"
clientapp = "fedtiny.trainer.flower.client_app:app"

[tool.flwr.app.config]
job = ""
'''

def resolve(host: str) -> list[str]:
    """Every address ``host`` resolves to (an IP literal resolves to itself; [] when it does not resolve)."""
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host.strip("[]"), None)})
    except (OSError, UnicodeError):
        return []


def is_loopback(host: str, resolver=resolve) -> bool:
    """True when ``host`` resolves, and every address it resolves to is a loopback address
    (``ipaddress``'s is_loopback: 127.0.0.0/8, ::1). A name is judged by what it resolves to, never
    by how it is spelled: ``127.attacker.invalid`` does not resolve (or resolves elsewhere)."""
    import ipaddress

    addrs = resolver(host)
    try:
        return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)
    except ValueError:
        return False


def split_address(addr: str) -> tuple[str, int]:
    """'host:port' -> (host, port); ValueError with a readable message otherwise."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{addr!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_bindable(host: str, port: int) -> None:
    """OSError (its strerror says why, e.g. 'Address already in use') when nothing could listen on
    ``host:port`` now: the port is held by another process or the address is not this machine's.
    SO_REUSEADDR as servers set it, so a port in TIME_WAIT counts as free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))


def listening_pids(port: int) -> set[int]:
    """Pids of the processes holding a TCP socket that listens on ``port`` (any address), read from
    /proc/net/tcp{,6} (socket inodes) and /proc/PID/fd (who holds them). Linux only; processes of
    other users are not visible."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:    # 0A: LISTEN
                inodes.add(f"socket:[{f[9]}]")
    pids = set()
    if not inodes:
        return pids
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            for fd in (d / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    pids.add(int(d.name))
                    break
        except OSError:
            continue
    return pids


def owns_port(proc: subprocess.Popen, port: int) -> bool:
    """True when ``proc`` or a process of its process group (``start`` gives each its own) is what
    listens on ``port``."""
    for pid in listening_pids(port):
        try:
            if pid == proc.pid or os.getpgid(pid) == proc.pid:
                return True
        except ProcessLookupError:
            continue
    return False


def bin_path(name: str) -> str:
    """The console script ``name`` of this Python environment (falls back to PATH)."""
    p = Path(sys.executable).parent / name
    return str(p) if p.exists() else name


def child_env(**extra) -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _die_with_parent() -> None:
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except OSError:
        pass


def start(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own process group, stdout and stderr appended to ``log``."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    f = open(log, "ab")
    try:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env or child_env(), preexec_fn=_die_with_parent)
    finally:
        f.close()


def stop(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    """SIGTERM the process group of ``proc``, SIGKILL it after ``grace`` seconds."""
    if proc is None:
        return
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    if proc.poll() is None or pgid is not None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                if pgid is not None:
                    os.killpg(pgid, sig)
                else:
                    proc.send_signal(sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                if pgid is None:
                    break
                os.killpg(pgid, 0)          # anything of the group still alive?
                time.sleep(0.2)
            except (subprocess.TimeoutExpired, ProcessLookupError, PermissionError):
                continue
    try:
        proc.wait(1)
    except subprocess.TimeoutExpired:
        pass


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None,
              what: str = "process", log: Path | None = None) -> None:
    """Return once ``host:port`` accepts TCP connections; RuntimeError when ``proc`` exits first or
    ``timeout`` seconds pass (the last lines of ``log`` in the message)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening on "
                               f"{host}:{port}{tail(log)}")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{what} did not listen on {host}:{port} within {timeout:g} s{tail(log)}")


def tail(log: Path | None, n: int = 3) -> str:
    if log is None or not Path(log).exists():
        return ""
    lines = [x for x in Path(log).read_text(errors="replace").splitlines() if x.strip()][-n:]
    return (" (log " + str(log) + ": " + " | ".join(x.strip()[:200] for x in lines) + ")") if lines else ""


def superlink_cmd(host: str, port: int, database: Path, certs: dict | None = None,
                  node_auth: bool = False) -> list[str]:
    """flower-superlink on host:port (one HTTP API for fleet, control and runtime in flwr 1.42),
    through fedtiny's ``control_guard``: its Control API answers this machine only; ``certs``
    {"certfile", "keyfile", "ca_certfile"} for TLS, else --insecure."""
    cmd = [sys.executable, "-m", "fedtiny.trainer.flower.control_guard", "--host", host, "--port", str(port),
           "--database", str(database), "--disable-runtime-dependency-installation"]
    if certs:
        cmd += ["--ssl-certfile", str(certs["certfile"]), "--ssl-keyfile", str(certs["keyfile"]),
                "--ssl-ca-certfile", str(certs["ca_certfile"])]
    else:
        cmd.append("--insecure")
    if node_auth:
        cmd.append("--enable-supernode-auth")
    return cmd


def supernode_cmd(superlink: str, port: int, node_config: dict, root_certificates: Path | None = None,
                  auth_key: Path | None = None) -> list[str]:
    """flower-supernode connected to ``superlink``; its runtime API for ClientApps on
    127.0.0.1:``port``; TLS with ``root_certificates`` else --insecure."""
    nc = " ".join(f'{k}="{v}"' if isinstance(v, str) else f"{k}={v}" for k, v in node_config.items())
    cmd = [bin_path("flower-supernode"), "--superlink", superlink, "--host", "127.0.0.1", "--port", str(port),
           "--node-config", nc]
    cmd += ["--root-certificates", str(root_certificates)] if root_certificates else ["--insecure"]
    if auth_key:
        cmd += ["--auth-supernode-private-key", str(auth_key)]
    return cmd


def write_app(folder: Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(APP_PYPROJECT)
    return folder


def write_flwr_home(home: Path, address: str, root_certificates: Path | None = None) -> Path:
    """$FLWR_HOME/config.toml with one connection, ``fedtiny``, to the SuperLink at ``address``."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    conn = f'address = "{address}"\n'
    conn += (f'root-certificates = "{Path(root_certificates).absolute()}"\n' if root_certificates
             else "insecure = true\n")
    (home / "config.toml").write_text(f'[superlink]\ndefault = "fedtiny"\n\n[superlink.fedtiny]\n{conn}')
    return home

"""Processes of a loopback Flower deployment for tests: a SuperLink, ``fedtiny site`` processes and
``fedtiny server``, each in its own process group on 127.0.0.1 with a free port, waited for, and
all stopped when the ``Cluster`` context ends, also on failure.

Flower starts processes of its own (SuperExec, per-message ClientApps and ServerApps), some in
sessions of their own; every process a test starts carries the environment variable
``FEDTINY_TEST_PROC=<cluster id>:<name>``, which all its descendants inherit, so ``kill_tree``
finds and ends exactly the processes of one started command (a crashed site machine), and the
cluster's exit ends every process it caused."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

MARK = "FEDTINY_TEST_PROC"

SMALL_JSON = {"samples_per_device": 160, "public_samples": 300, "phase0_epochs": 5, "phase3_epochs": 5,
              "reference_epochs": 5}


def fedtiny_cmd(*args) -> list[str]:
    return [sys.executable, "-c", "from fedtiny.cli import run; run()", *args]


class Cluster:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.procs: list[subprocess.Popen] = []
        self.sites: dict[int, subprocess.Popen] = {}
        self._listen: dict[int, tuple[int, str]] = {}       # site -> (its SuperNode's port, its name)
        self.id = uuid.uuid4().hex

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        for p in reversed(self.procs):
            self.kill(p, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            self.kill(p, signal.SIGKILL)
        self.kill_tree(None)

    def marked(self, name: str | None) -> list[int]:
        """Pids of the live processes started (directly or not) by command ``name`` (None: any)."""
        want = f"{MARK}={self.id}:{name}".encode() if name else f"{MARK}={self.id}:".encode()
        out = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == os.getpid():
                continue
            try:
                env = (d / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(e == want or (name is None and e.startswith(want)) for e in env):
                out.append(int(d.name))
        return out

    def kill_tree(self, name: str | None) -> None:
        """SIGKILL every process of command ``name`` (None: of the whole cluster), as a crash would."""
        for pid in self.marked(name):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    @staticmethod
    def kill(p: subprocess.Popen, sig) -> None:
        try:
            os.killpg(p.pid, sig)          # the process and everything it started
        except (ProcessLookupError, PermissionError):
            pass

    def start(self, cmd: list[str], log: str, env: dict | None = None, name: str | None = None) -> subprocess.Popen:
        from fedtiny.trainer.flower.processes import child_env

        f = open(self.root / log, "ab")
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True,
                             env=child_env(**(env or {}), **{MARK: f"{self.id}:{name or log}"}))
        f.close()
        self.procs.append(p)
        return p

    def superlink(self, gated: bool = True) -> int:
        """A SuperLink on a free port; ``gated``: behind fedtiny's gate (only fedtiny's ServerApp
        runs; refusals in ``link-refusals.log``), as ``fedtiny server`` starts it."""
        from fedtiny.trainer.flower import gate
        from fedtiny.trainer.flower.processes import free_port, superlink_cmd, wait_port

        port = free_port()
        home = self.root / "link-home"
        home.mkdir(exist_ok=True)
        env = {"FLWR_HOME": str(home)}
        if gated:
            env.update(gate.install(self.root / "link-gate", self.root / "link-refusals.log"))
        p = self.start(superlink_cmd("127.0.0.1", port, self.root / "link.db"), "superlink.log", env)
        wait_port("127.0.0.1", port, 120, p, "flower-superlink", self.root / "superlink.log")
        return port

    def site(self, k: int, link_port: int, timeout: float = 600, ca: Path | None = None,
             key: Path | None = None, name: str | None = None, data: Path | None = None,
             wait: bool = True) -> subprocess.Popen:
        """Start ``fedtiny site`` for built-in electrical device k or the device folder ``data`` (TLS with ``ca``, node
        authentication with ``key``, else --insecure); return once its SuperNode listens (``wait``) or at once
        (then ``wait_sites`` waits: sites that start together import TensorFlow at the same time)."""
        from fedtiny.trainer.flower.processes import free_port

        port = free_port()
        name = name or f"site{k}"
        secure = ["--root-certificates", str(ca)] if ca else ["--insecure"]
        secure += ["--auth-key", str(key)] if key else []
        source = ["--data", str(data)] if data is not None else ["--builtin", f"electrical:{k}"]
        p = self.start(fedtiny_cmd("site", *source, "--server", f"127.0.0.1:{link_port}",
                                   *secure, "--work", str(self.root / name), "--port", str(port)),
                       f"{name}.log", name=name)
        self.sites[k] = p
        self._listen[k] = (port, name)
        if wait:
            self.wait_sites([k], timeout)
        return p

    def wait_sites(self, ks, timeout: float = 600) -> None:
        """Return once the SuperNode of every site in ``ks`` listens (a hang guard of ``timeout`` s
        for all of them; a site that exits first fails at once, with its log)."""
        from fedtiny.trainer.flower.processes import wait_port

        deadline = time.monotonic() + timeout
        for k in ks:
            port, name = self._listen[k]
            wait_port("127.0.0.1", port, max(1.0, deadline - time.monotonic()), self.sites[k], f"site {k}",
                      self.root / f"{name}.log")

    def small_config(self, **over) -> Path:
        path = self.root / "small.json"
        path.write_text(json.dumps({**SMALL_JSON, **over}))
        return path


def wait_for(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def make_tls(folder: Path) -> dict:
    """A test CA and a SuperLink certificate for 127.0.0.1 / localhost signed by it (PEM files in
    ``folder``): {"ca": ..., "cert": ..., "key": ...}. Made with ``cryptography``, valid one day."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject, issuer, public, signer, ca: bool, san=None):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public)
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedtiny test CA")])
    ca = cert(ca_name, ca_name, ca_key.public_key(), ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    srv = cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), ca_name, key.public_key(), ca_key,
               False, [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    out = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out["cert"].write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    out["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    return out


def process_tree(root: int) -> set[int]:
    """``root`` and every live descendant (from /proc/PID/stat parent ids)."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                parent[int(d.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    tree, grew = {root}, True
    while grew:
        new = {p for p, pp in parent.items() if pp in tree} - tree
        tree |= new
        grew = bool(new)
    return tree


def listening_sockets(pids: set[int]) -> set[tuple[str, int, int]]:
    """(local address, port, pid) of every TCP socket in LISTEN state owned by ``pids``, read from
    /proc/net/tcp{,6} (socket inodes) and /proc/PID/fd (which process holds them)."""
    import ipaddress
    import socket
    import struct

    listen = {}
    for name, fam in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            rows = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if f[3] != "0A":                      # TCP_LISTEN
                continue
            hexaddr, hexport = f[1].split(":")
            raw = bytes.fromhex(hexaddr)
            # the kernel prints each 32-bit word in host (little-endian) order
            raw = b"".join(struct.pack("<I", struct.unpack(">I", raw[i:i + 4])[0]) for i in range(0, len(raw), 4))
            listen[int(f[9])] = (str(ipaddress.ip_address(raw)), int(hexport, 16))
    out = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in listen:
                    out.add((*listen[inode], pid))
    return out


def is_loopback_address(addr: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(addr)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback

"""The tutorials' commands work as written. Every fenced block marked ``<!-- tutorial-test -->`` in
docs/tutorials/first-run.md and own-fleet.md runs here, line by line, in an empty folder: ``fedtiny``
lines in this process (one TensorFlow import for all of them), other lines with bash; a line ending
in ``&`` starts in the background and ``$PTY`` is set to the pseudo-terminal it prints (the
emulator's, QEMU's). The federation tutorial (docs/tutorials/federation.md) runs here too, in one
folder standing for its four machines (its certificates pass a TLS handshake that checks them as a
site does), except ``fedtiny server`` and ``fedtiny site``: their arguments are parsed by the
command-line definitions (so every file they name exists) and every option they use is one the
TLS + node-authentication federation of tests/test_flower_deploy.py passes (that test runs the
federation itself, on loopback)."""
from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedtiny.cli import main

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "docs" / "tutorials"
MARK = re.compile(r"<!-- tutorial-test(?::\s*([\w. -]+?))?\s*-->\s*\n```(\w+)\n(.*?)\n```", re.DOTALL)
# only ends a hung step; every wait below is for output or an exit (progress), not for time
HANG_S = 300.0
QEMU_TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")
QEMU_MISSING = [t for t in QEMU_TOOLS if shutil.which(t) is None]
IN_CI = os.environ.get("CI", "").lower() == "true"


def marked_blocks(page: Path) -> list[tuple[str, str, list[str]]]:
    """The page's marked fenced blocks in order: (tag, language, lines without comments or blanks)."""
    blocks = []
    for tag, lang, body in MARK.findall(page.read_text()):
        lines = [ln.strip() for ln in body.splitlines()]
        blocks.append((tag or "", lang, [ln for ln in lines if ln and not ln.startswith("#")]))
    return blocks


def expand(line: str, env: dict) -> list[str]:
    """``line`` split as a shell would, with $NAME replaced from ``env``."""
    return shlex.split(re.sub(r"\$(\w+)", lambda m: env[m.group(1)], line))


class Steps:
    """Runs tutorial lines in ``folder``, and stops every background process it started."""

    def __init__(self, folder: Path, env: dict):
        self.folder, self.env, self.background = folder, env, []

    def run(self, line: str) -> str:
        if line.endswith("&"):
            return self._start(line[:-1].strip())
        args = expand(line, self.env)
        if args[0] == "fedtiny":
            r = CliRunner().invoke(main, args[1:], catch_exceptions=False)
            assert r.exit_code == 0, f"{line}\n{r.output}"
            return r.output
        r = subprocess.run(["bash", "-c", line], cwd=self.folder, env={**os.environ, **self.env},
                           capture_output=True, text=True, timeout=HANG_S)
        assert r.returncode == 0, f"{line}\n{r.stdout}{r.stderr}"
        return r.stdout

    def _start(self, line: str) -> str:
        """Start ``line`` in its own process group and wait for the pty it prints: $PTY."""
        log = self.folder / f".bg{len(self.background)}.log"
        with open(log, "w") as out:
            p = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=self.folder, stdout=out,
                                 stderr=subprocess.STDOUT, env={**os.environ, **self.env}, start_new_session=True)
        self.background.append(p)
        deadline = time.monotonic() + HANG_S
        while True:
            m = re.search(r"/dev/pts/\d+", log.read_text())
            if m:
                self.env["PTY"] = m.group(0)
                return log.read_text()
            assert p.poll() is None and time.monotonic() < deadline, f"{line}: no pty\n{log.read_text()}"
            time.sleep(0.1)

    def stop(self) -> None:
        """End every background process (SIGTERM: `fedtiny flash` then stops its QEMU), and any QEMU
        a flash named in its output that is still running (it runs in a session of its own)."""
        for p in self.background:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        for log in self.folder.glob(".bg*.log"):
            for pid in map(int, re.findall(r"QEMU mps2-an386 runs .*?\(pid (\d+)\)", log.read_text())):
                try:
                    if b"qemu-system-arm" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        os.kill(pid, signal.SIGKILL)
                except (FileNotFoundError, ProcessLookupError):
                    pass


def run_tutorial(page: Path, folder: Path, monkeypatch) -> list[str]:
    monkeypatch.chdir(folder)
    steps = Steps(folder, {})
    outputs = []
    try:
        for _tag, lang, lines in marked_blocks(page):
            assert lang == "sh", page
            outputs += [steps.run(line) for line in lines]
    finally:
        steps.stop()
    return outputs


# The one size the test changes: `fedtiny demo` has no size options, so its fleet and epochs are those
# of the tests' small runs (tests/conftest.py SMALL); every option the tutorial gives still applies.
DEMO_SIZES = dict(samples_per_device=160, public_samples=300, phase0_epochs=5, phase3_epochs=5)


def test_first_run_tutorial(tmp_path, monkeypatch):
    from dataclasses import replace

    import fedtiny.demo

    real = fedtiny.demo.fleet_config
    monkeypatch.setattr(fedtiny.demo, "fleet_config", lambda cfg, root: real(replace(cfg, **DEMO_SIZES), root))
    out = run_tutorial(TUTORIALS / "first-run.md", tmp_path, monkeypatch)
    assert len(out) == 4
    assert (tmp_path / "runs" / "first" / "report.json").is_file()
    assert (tmp_path / "runs" / "first" / "report.html").is_file()
    assert list((tmp_path / "runs" / "first" / "firmware").glob("dev0*-nano33ble"))
    assert list((tmp_path / "runs" / "first" / "bench").glob("dev01_*.json"))
    cfg = __import__("json").loads((tmp_path / "runs" / "first" / "config.json").read_text())
    assert (cfg["devices"], cfg["rounds"], cfg["phase0_epochs"], cfg["phase3_epochs"]) == (3, 1, 5, 5)


@pytest.mark.skipif(bool(QEMU_MISSING) and not IN_CI, reason=f"needs {', '.join(QEMU_MISSING)}")
def test_own_fleet_tutorial(tmp_path, monkeypatch):
    out = run_tutorial(TUTORIALS / "own-fleet.md", tmp_path, monkeypatch)
    assert len(out) == 7
    run = tmp_path / "runs" / "mine"
    assert sorted(p.name for p in (run / "devices").iterdir()) == ["dev00", "dev01", "dev02"]
    assert (run / "firmware" / "dev01-qemu-m4" / "build" / "firmware.elf").is_file()
    bench = list((run / "bench").glob("dev01_*.json"))
    assert bench and "icount" in bench[0].read_text()          # the emulated Cortex-M4 answered


# --- the federation tutorial -------------------------------------------------------------------
def _options(args: list[str]) -> set[str]:
    return {a.split("=")[0] for a in args if a.startswith("--")}


def _deploy_test_options() -> tuple[set[str], set[str]]:
    """The options the loopback federation tests give `fedtiny server` and `fedtiny site`: the string
    literals of every ``fedtiny_cmd("server" | "site", ...)`` call in tests/test_flower_deploy.py and
    tests/flowerfixture.py, and of the fixture's ``Cluster.site``, which starts the sites."""
    def literals(node) -> set[str]:
        return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                and n.value.startswith("--")}

    found = {"server": set(), "site": set()}
    for name in ("test_flower_deploy.py", "flowerfixture.py"):
        for node in ast.walk(ast.parse((ROOT / "tests" / name).read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "fedtiny_cmd" and node.args
                    and isinstance(node.args[0], ast.Constant) and node.args[0].value in found):
                found[node.args[0].value] |= literals(node)
            if isinstance(node, ast.FunctionDef) and node.name == "site":
                found["site"] |= literals(node)
    return found["server"], found["site"]


def _tls_handshake(cert: Path, key: Path, ca: Path, host: str) -> None:
    """One TLS handshake on ``host``: a server with ``cert``/``key``, a client that trusts ``ca`` only
    and checks the host name; raises when the client refuses the certificate."""
    import socket
    import ssl
    import threading

    srv_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    srv_ctx.load_cert_chain(cert, key)
    cli_ctx = ssl.create_default_context(cafile=str(ca))
    errors = []
    with socket.create_server((host, 0)) as lsock:
        lsock.settimeout(HANG_S)

        def serve():
            try:
                conn, _ = lsock.accept()
                with srv_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (OSError, ssl.SSLError) as e:           # the client's refusal shows on its side
                errors.append(e)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        with socket.create_connection(lsock.getsockname(), timeout=HANG_S) as raw:
            with cli_ctx.wrap_socket(raw, server_hostname=host) as tls:
                assert tls.recv(2) == b"ok"
        t.join(HANG_S)
    assert not errors, errors


def test_federation_tutorial(tmp_path, monkeypatch):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    import ipaddress

    monkeypatch.chdir(tmp_path)
    steps = Steps(tmp_path, {"SERVER": "127.0.0.1"})
    sites = ["dev00", "dev01", "dev02"]
    checked = {}
    for tag, lang, lines in marked_blocks(TUTORIALS / "federation.md"):
        if lang == "toml":
            (tmp_path / tag).write_text("\n".join(lines) + "\n")
            (tmp_path / "keys").mkdir(exist_ok=True)        # the sites' public keys, as sent to the server
            for dev in sites:
                shutil.copy(tmp_path / f"{dev}.key.pub", tmp_path / "keys" / f"{dev}.key.pub")
            continue
        for dev in sites if tag == "each site" else [None]:
            if dev:
                steps.env["DEV"] = dev
            for line in lines:
                args = expand(line, steps.env)
                if args[:2] in (["fedtiny", "server"], ["fedtiny", "site"]) and args[2:3] != ["keygen"]:
                    cmd = main.get_command(None, args[1])
                    cmd.make_context(args[1], args[2:])          # parses: options exist, named files exist
                    checked.setdefault(args[1], []).append(args[2:])
                else:
                    steps.run(line)
    assert len(checked["server"]) == 1 and len(checked["site"]) == 3

    # the certificates made by the tutorial's openssl lines: a CA, and the server's signed by it for SERVER
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    srv = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    ca.public_key().verify(srv.signature, srv.tbs_certificate_bytes, ec.ECDSA(srv.signature_hash_algorithm))
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    # PKCS#8 PEM, the key format the deploy test's certificates use; and a TLS handshake on loopback
    # with exactly these files: the server presents server.pem, the client trusts only ca.pem and
    # checks the address, as a site's SuperNode does with --root-certificates
    assert (tmp_path / "server.key").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    _tls_handshake(tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem", "127.0.0.1")
    for dev in sites:                                        # `fedtiny site keygen`: private 0600 + public
        assert (tmp_path / f"{dev}.key").stat().st_mode & 0o077 == 0
        assert (tmp_path / f"{dev}.key.pub").read_text().startswith("ecdsa-")

    # what the loopback federation test runs: the same security options, and every option used here
    deploy_server, deploy_site = _deploy_test_options()
    tls_auth_server = {"--ssl-certfile", "--ssl-keyfile", "--ssl-ca-certfile", "--sites", "--public"}
    tls_auth_site = {"--root-certificates", "--auth-key", "--data"}
    server_opts = _options(checked["server"][0])
    site_opts = set.union(*(_options(a) for a in checked["site"]))
    assert tls_auth_server <= server_opts and tls_auth_site <= site_opts
    assert tls_auth_server <= deploy_server and tls_auth_site <= deploy_site, \
        "tests/test_flower_deploy.py no longer runs the TLS + node-auth federation this tutorial describes"
    assert server_opts <= deploy_server, \
        f"the tutorial's server options {sorted(server_opts - deploy_server)} are not run by tests/test_flower_deploy.py"
    assert site_opts <= deploy_site, \
        f"the tutorial's site options {sorted(site_opts - deploy_site)} are not run by tests/flowerfixture.py's sites"

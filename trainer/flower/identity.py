"""Device identity in a deployment: which SuperNode may serve which device (Flower node authentication).

- ``keygen(path)``: a site's key pair, ``path`` (OpenSSH private key, mode 0600) and ``path.pub``
  (``ecdsa-sha2-nistp384 ...``, the format ``flower-supernode --auth-supernode-private-key`` and
  ``flwr supernode register`` read).
- ``load_sites(sites.toml)``: device -> public key, from a table ``[sites]`` whose keys are device ids
  (``0`` or ``dev00``), or in a fleet-folder run the devices' names (``site_names``), and whose
  values are a public-key file (relative to sites.toml) or the key text.
- ``register(home, key)``: register one public key with the SuperLink of ``$FLWR_HOME`` (its Control
  API, ``flwr supernode register``); returns the node id Flower gives it. With
  ``flower-superlink --enable-supernode-auth`` only registered keys can join, and a node's id is
  fixed by its key, so the server knows which node id is which device before any node speaks: a
  node that claims another device, or any other node, is refused and logged (``backend.py``).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

KEY_TYPE = "ecdsa-sha2-nistp384"


def keygen(path: Path) -> tuple[Path, Path]:
    """Write a new P-384 key pair: ``path`` (private, 0600) and ``path.pub``; FileExistsError when
    ``path`` exists (a site's key is never overwritten silently)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = Path(path)
    pub = path.with_name(path.name + ".pub")
    if path.exists() or pub.exists():
        raise FileExistsError(f"{path if path.exists() else pub} exists; remove it or choose another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    tmp_pub = pub.with_name(f".{pub.name}.tmp")
    tmp_pub.write_bytes(public + b"\n")
    tmp.replace(path)
    tmp_pub.replace(pub)
    return path, pub


def _public_key(text: str, where: str) -> str:
    """The ``ecdsa-sha2-nistp384 AAAA...`` part of a public key line; ValueError otherwise."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    parts = text.strip().split()
    try:
        key = load_ssh_public_key(" ".join(parts[:2]).encode())
    except (ValueError, IndexError):
        raise ValueError(f"{where} is not an OpenSSH public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(f"{where} is not an EC public key (make one with `fedtiny site keygen`)")
    return " ".join(parts[:2])


def _sites_table(path: Path) -> dict:
    import tomllib

    try:
        doc = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{path}: {' '.join(str(e).split())}") from None
    table = doc.get("sites")
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{path}: expected a [sites] table: device = \"public key file\"")
    return table


def device_name(key: str) -> str:
    """A sites.toml key as a device name: a bare number ``3`` is ``dev03`` (the run's default
    names), anything else is the name as written (a fleet folder's device folder)."""
    key = str(key).strip()
    return f"dev{int(key):02d}" if key.isdigit() else key


def site_names(path: Path) -> list[str]:
    """The device names of ``sites.toml`` (its ``[sites]`` keys through ``device_name``), sorted;
    ValueError for a missing table, an empty name, or two names equal after case folding."""
    names = [device_name(k) for k in _sites_table(path)]
    if any(not n for n in names):
        raise ValueError(f"{path}: an empty device name in [sites]")
    folded = [n.casefold() for n in names]
    twice = sorted({n for n in names if folded.count(n.casefold()) > 1})
    if twice:
        raise ValueError(f"{path}: device {', '.join(twice)} is listed twice (names are compared case-folded)")
    return sorted(names)


def load_sites(path: Path, names=None) -> dict[int, str]:
    """device -> public key line of ``sites.toml`` (module doc); ValueError with a readable message.
    ``names`` (a fleet-folder run's device names): the keys are device names, and a device's number
    is its name's position in ``names``; without it, keys are device ids ``0`` or ``dev00``."""
    path = Path(path)
    table = _sites_table(path)
    out: dict[int, str] = {}
    for name, value in table.items():
        if names is not None:
            if device_name(name) not in names:
                raise ValueError(f"{path}: {name!r} is not a device of this run ({', '.join(names)})")
            dev = list(names).index(device_name(name))
        else:
            m = re.fullmatch(r"(?:dev)?(\d+)", str(name))
            if not m:
                raise ValueError(f"{path}: {name!r} is not a device id (0, 1, ... or dev00, dev01, ...)")
            dev = int(m.group(1))
        if dev in out:
            raise ValueError(f"{path}: device {dev} is listed twice")
        if not isinstance(value, str):
            raise ValueError(f"{path}: device {name}: give a public key file or the key text")
        if value.strip().startswith(KEY_TYPE) or value.strip().startswith("ecdsa-"):
            out[dev] = _public_key(value, f"{path}: device {name}")
        else:
            f = (path.parent / value).expanduser()
            try:
                out[dev] = _public_key(f.read_text(), f"{path}: device {name}: {f}")
            except OSError as e:
                raise ValueError(f"{path}: device {name}: {e.strerror or e}: {f}") from None
    keys = list(out.values())
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise ValueError(f"{path}: one public key is listed for devices "
                         + ", ".join(str(d) for d, k in out.items() if k in dup) + ": each site needs its own")
    return out


def _flwr(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    from .processes import bin_path, child_env

    return subprocess.run([bin_path("flwr"), *args], capture_output=True, text=True, timeout=timeout,
                          env=child_env(FLWR_HOME=home))


def register(home: Path, public_key: str, record: Path) -> int:
    """Register ``public_key`` with the SuperLink of ``home``; its node id. ``record`` (JSON, key ->
    node id) remembers what this server registered, so a resumed run on the same SuperLink database
    finds the ids again (Flower answers "Public key already in use" and does not list keys)."""
    from ..rundir import atomic_write_json

    record = Path(record)
    known = json.loads(record.read_text()) if record.exists() else {}
    f = record.with_name(".register-key.pub")
    f.write_text(public_key + "\n")
    p = _flwr(home, "supernode", "register", str(f), "fedtiny", "--format", "json")
    f.unlink(missing_ok=True)
    try:
        doc = json.loads(p.stdout[p.stdout.index("{"):])
    except ValueError:
        doc = {}
    if doc.get("success") and doc.get("node-id") is not None:
        known[public_key] = int(doc["node-id"])
        atomic_write_json(record, known)
        return known[public_key]
    if "already in use" in str(doc.get("error-message", "")) and public_key in known:
        return int(known[public_key])
    raise RuntimeError("flwr supernode register failed: "
                       + " ".join(str(doc.get("error-message") or p.stdout + p.stderr).split())[-300:])

"""``fedtiny server`` and ``fedtiny site``: a real multi-site federation over Flower 1.42.

server: starts (or connects to) a SuperLink, submits our ServerApp with ``flwr run`` and waits
        for it; the ServerApp runs the same steps as ``fedtiny train`` and writes the same run
        directory (Flower's own files go to ``--work``, default ``RUNS/.NAME.flower``).
site:   a SuperNode plus our long-lived site worker on the machine that holds one device's data.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

from fedtiny.trainer.rundir import dumps_strict
from fedtiny.errors import UserError, friendly
from fedtiny.options import (config_fields, config_options, dataset_option, devices_option, file_values,
                             min_sites_option, rounds_option)

INSECURE_HELP = ("Plain-text connections, no TLS. Allowed only on loopback (127.0.0.1 / localhost): "
                 "for tests and demos on one machine; across machines give certificates instead.")


def _check_tls(host: str, insecure: bool, have_certs: bool, what: str) -> None:
    from fedtiny.trainer.flower.processes import is_loopback

    if insecure and not is_loopback(host):
        raise UserError(f"--insecure is allowed only on loopback; {what} {host} is not: give TLS certificates")
    if not insecure and not have_certs:
        raise UserError(f"give TLS certificates for {what} {host}, or --insecure on loopback")


# --- server --------------------------------------------------------------------------------------
@click.command()
@dataset_option()
@devices_option()
@rounds_option()
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0), help="Seed of the run.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory [default: runs/<dataset>-<method>-s<seed>].")
@click.option("--resume", is_flag=True, help="Continue a run that was interrupted (same options).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address the SuperLink listens on (0.0.0.0: every interface; needs TLS and --sites). "
                   "Flower 1.42 serves its Control API (flwr run) on the same port.")
@click.option("--port", default=9092, show_default=True, type=click.IntRange(1, 65535),
              help="SuperLink port (sites connect here; flwr run too).")
@click.option("--superlink", "superlink_addr", default=None, metavar="HOST:PORT",
              help="Use this running SuperLink (on this machine: the ServerApp it runs writes --out here) "
                   "instead of starting one.")
@click.option("--insecure", is_flag=True, help=INSECURE_HELP)
@click.option("--ssl-certfile", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="SuperLink TLS certificate (PEM).")
@click.option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="SuperLink TLS private key (PEM).")
@click.option("--ssl-ca-certfile", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CA certificate (PEM) that signed the SuperLink's certificate; flwr run verifies with it.")
@click.option("--sites", "sites_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="sites.toml: [sites] device = \"public key file\" (from `fedtiny site keygen`). Turns on "
                   "Flower node authentication: only these keys may join, each only for its device. "
                   "Required off loopback; needs TLS.")
@min_sites_option()
@click.option("--timeout", default=600.0, show_default=True, type=click.FloatRange(1),
              help="Seconds a site has to answer one request before the server goes on without it.")
@click.option("--wait", default=300.0, show_default=True, type=click.FloatRange(0),
              help="Seconds to wait for sites to connect (all of them at the start; the one a Phase-1 visit "
                   "or a Phase-3 step needs later) before a clear error.")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for Flower's files (SuperLink database, logs, job) [default: next to --out].")
@click.option("--device-names", default=None, metavar="NAME,...",
              help="With --public: the names of the fleet's devices (their folders at the sites); they are "
                   "numbered in name order. With --sites the names are its [sites] keys (this option, if "
                   "given, must agree) [default: dev00..devNN].")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON object of run settings (TrainConfig fields, e.g. a run's config.json); options given "
                   "on the command line take precedence.")
@click.option("--board-run", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              metavar="RUN",
              help="Federate boards instead of training: every site is `fedtiny site --board-port` in front of a "
                   "board flashed with device K of the finished run RUN (fedtiny build --runtime compiled "
                   "--trainable-head); --head-rounds rounds of head-only federated averaging, then Phase 3, run "
                   "on the boards. Writes --out [default: RUN/board-sites]; the run's own settings apply.")
@click.option("--head-rounds", default=1, show_default=True, type=click.IntRange(0),
              help="--board-run: rounds of head-only federated averaging before Phase 3.")
@click.option("--head-epochs", default=1, show_default=True, type=click.IntRange(1, 100000),
              help="--board-run: epochs each board trains its head per round.")
@click.option("--head-lr", default=0.05, show_default=True, type=click.FloatRange(0, min_open=True),
              help="--board-run: the boards' SGD learning rate.")
@click.option("--head-momentum", default=0.9, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="--board-run: the boards' SGD momentum.")
@click.option("--board-phase3-epochs", type=click.IntRange(1, 100000), default=None,
              help="--board-run: epochs of Phase 3 on each board [default: the run's phase3_epochs].")
@config_options()
@click.pass_context
@friendly
def server(ctx, out, resume, host, port, superlink_addr, insecure, ssl_certfile, ssl_keyfile, ssl_ca_certfile,
           sites_file, min_sites, timeout, wait, work, config_file, board_run, head_rounds, head_epochs, head_lr,
           head_momentum, board_phase3_epochs, **options):
    """Run a federation's server: Phase 0 here on the public pool, every site step on the sites.

    Starts a SuperLink on HOST:PORT (or uses --superlink), submits fedtiny's ServerApp with
    `flwr run`, and writes the same run directory as `fedtiny train` (config, metrics, report,
    each device's models and device.json). Each device's test windows stay at its site.
    With --board-run the sites are boards: see docs/board-site.md.
    """
    from click.core import ParameterSource

    board_opts = ("head_rounds", "head_epochs", "head_lr", "head_momentum", "board_phase3_epochs")
    if board_run is not None:
        given = [k for k in options if ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, None)]
        given += ["resume"] * bool(resume) + ["config"] * (config_file is not None)
        if given:
            raise UserError(f"--board-run federates the boards of a finished run with that run's settings; drop "
                            f"{', '.join('--' + k.replace('_', '-') for k in given)}")
        board = {"rounds": head_rounds, "epochs": head_epochs, "lr": head_lr, "momentum": head_momentum,
                 "phase3_epochs": board_phase3_epochs}
        return _board_server(board_run, board, out, host, port, superlink_addr, insecure, ssl_certfile, ssl_keyfile,
                             ssl_ca_certfile, sites_file, min_sites, timeout, wait, work)
    given = [k for k in board_opts if ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, None)]
    if given:
        raise UserError(f"{', '.join('--' + k.replace('_', '-') for k in given)} need(s) --board-run RUN")
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.flower.server_app import Deployed
    from fedtiny.trainer.pipeline import Run

    if sites_file is not None and options.get("public"):      # a fleet-folder run: sites.toml names the devices
        from fedtiny.trainer.flower import identity

        try:
            options.update(site_names=identity.site_names(sites_file), sites_file=sites_file)
        except ValueError as e:
            raise UserError(f"--sites {e}") from None
    cfg = TrainConfig.from_dict(merged_config(ctx, options, config_file))
    if out is None:
        name = Path(cfg.dataset).stem if cfg.dataset not in ("electrical", "mechanical") else cfg.dataset
        out = Path("runs") / f"{name}-{cfg.method}-s{cfg.seed}"
    out = out.absolute()
    certs = _certs(ssl_certfile, ssl_keyfile, ssl_ca_certfile)
    sites = _connection(host, port, superlink_addr, insecure, certs, ssl_ca_certfile, sites_file, cfg)
    run = Run(cfg, out, resume, backend=Deployed(None, timeout, wait), min_sites=min_sites)   # checks only
    if resume and (done := run.finished_report()) is not None:
        click.echo(f"{out} is already finished; nothing to resume (its report follows)")
        _summary(done, out)
        return
    work = (work or out.parent / f".{out.name}.flower").absolute()
    job = {"cfg": cfg.to_dict(), "out": str(out), "resume": resume, "min_sites": min_sites, "timeout": timeout,
           "wait": wait}
    _launch(job, work, host, port, superlink_addr, certs, sites, ssl_ca_certfile, cfg.devices)
    _summary(json.loads((out / "report.json").read_text()), out)


def _launch(job: dict, work: Path, host: str, port: int, superlink_addr: str | None, certs: dict | None,
            sites: dict | None, ssl_ca_certfile: Path | None, n_sites: int) -> None:
    """Start the SuperLink (unless --superlink), register --sites' keys, submit the ServerApp with
    ``job`` (written to WORK/job.json) and follow it until it wrote its status; UserError when it failed."""
    from fedtiny.trainer.flower import processes as fp

    link_host, link_port = fp.split_address(superlink_addr) if superlink_addr else (host, port)
    work.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    job_file = work / "job.json"
    status = work / "status.json"
    status.unlink(missing_ok=True)
    app_dir = fp.write_app(work / "app")
    connect = "127.0.0.1" if link_host in ("0.0.0.0", "::") else link_host
    address = f"{connect}:{link_port}"
    home = fp.write_flwr_home(work / "flwr-home", address, ssl_ca_certfile)
    link = flwr_run = None
    try:
        if not superlink_addr:
            link_log = work / f"superlink-{stamp}.log"
            from fedtiny.trainer.flower import gate

            # only fedtiny's ServerApp is ever started by this SuperLink (trainer/flower/gate.py)
            link = fp.start(fp.superlink_cmd(host, port, work / "superlink.db", certs, sites is not None),
                            link_log, fp.child_env(FLWR_HOME=home, **gate.install(work / "gate", work / "refusals.log")))
            try:
                fp.wait_port(connect, port, 120, link, "flower-superlink", link_log)
            except RuntimeError as e:
                raise UserError(str(e)) from None
            if link.poll() is not None or not fp.owns_port(link, port):
                raise UserError(f"--port {port}: another process took {host}:{port} before the SuperLink "
                                f"could listen on it{fp.tail(link_log)}; choose another --port")
            click.echo(f"SuperLink listening on {host}:{port} (log {link_log})")
        nodes = _register(sites, home, work) if sites else None
        job_file.write_text(dumps_strict({**job, "watch_pid": os.getpid(), "nodes": nodes}, indent=2))
        run_log = work / f"flwr-run-{stamp}.log"
        flwr_run = fp.start([fp.bin_path("flwr"), "run", str(app_dir), "fedtiny", "--stream",
                             "--run-config", f'job="{job_file}"'], run_log, fp.child_env(FLWR_HOME=home))
        click.echo(f"ServerApp submitted; waiting for {n_sites} site(s) (--wait {job['wait']:g} s); log {run_log}")
        _follow(run_log, status, flwr_run, link)
    finally:
        fp.stop(flwr_run)
        fp.stop(link)
    st = json.loads(status.read_text())
    if not st.get("ok"):
        raise UserError(st.get("error", "the ServerApp failed") + f" (log: {run_log})")


def _certs(ssl_certfile, ssl_keyfile, ssl_ca_certfile) -> dict | None:
    if any((ssl_certfile, ssl_keyfile, ssl_ca_certfile)):
        if not all((ssl_certfile, ssl_keyfile, ssl_ca_certfile)):
            raise UserError("TLS needs all of --ssl-certfile, --ssl-keyfile and --ssl-ca-certfile")
        return {"certfile": ssl_certfile, "keyfile": ssl_keyfile, "ca_certfile": ssl_ca_certfile}
    return None


def _connection(host: str, port: int, superlink_addr: str | None, insecure: bool, certs: dict | None,
                ssl_ca_certfile, sites_file, cfg) -> dict | None:
    """Check the server's connection options before anything starts: --superlink's address, TLS
    (or --insecure on loopback), --sites against the run's devices, and that HOST:PORT is free;
    returns --sites' keys by device (None without it)."""
    from fedtiny.trainer.flower import processes as fp

    if superlink_addr:
        try:
            link_host, _ = fp.split_address(superlink_addr)
        except ValueError as e:
            raise UserError(f"--superlink: {e}") from None
    else:
        link_host = host
    _check_tls(link_host, insecure, certs is not None or (superlink_addr is not None and ssl_ca_certfile),
               "the SuperLink")
    sites = _sites(sites_file, link_host, cfg.devices, insecure, cfg.device_names if cfg.public else None)
    if not superlink_addr:
        try:
            fp.check_bindable(host, port)
        except OSError as e:
            raise UserError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror or e}); another "
                            "program holds it: choose another --port, or give --superlink HOST:PORT to use a "
                            "running SuperLink") from None
    return sites


def _board_server(run_dir: Path, board: dict, out, host, port, superlink_addr, insecure, ssl_certfile, ssl_keyfile,
                  ssl_ca_certfile, sites_file, min_sites, timeout, wait, work) -> None:
    """``fedtiny server --board-run``: the job of ``trainer/flower/head_rounds.py`` on run_dir's boards."""
    from fedtiny.codegen.compiled.head import global_head
    from fedtiny.codegen.errors import CodegenError
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.rundir import RunFileError, device_dir, read_json

    run_dir = run_dir.absolute()
    if not (run_dir / "report.json").is_file():
        raise UserError(f"--board-run {run_dir}: not a finished run (no report.json)")
    try:
        cfg = TrainConfig.from_dict(read_json(run_dir / "config.json"))
        head = global_head(run_dir)
        devices = {}
        for k in range(cfg.devices):
            info = read_json(device_dir(run_dir, k) / "device.json")
            devices[str(k)] = {key: info[key] for key in ("model_sha256", "input_scale", "input_zero_point")}
    except (RunFileError, CodegenError, KeyError, ValueError, OSError) as e:
        raise UserError(f"--board-run {run_dir}: {e}") from None
    import numpy as np

    from fedtiny.headtwin import flatten

    out = (out or run_dir / "board-sites").absolute()
    certs = _certs(ssl_certfile, ssl_keyfile, ssl_ca_certfile)
    sites = _connection(host, port, superlink_addr, insecure, certs, ssl_ca_certfile, sites_file, cfg)
    w1 = head[0]
    job = {"kind": "heads", "cfg": cfg.to_dict(), "run_dir": str(run_dir), "out": str(out),
           "head_shape": [int(w1.shape[0]), int(w1.shape[1]), int(head[2].shape[1])],
           "init_head": [float(v) for v in flatten(head)], "devices": devices,
           "rounds": board["rounds"], "epochs": board["epochs"], "lr": float(np.float32(board["lr"])),
           "momentum": float(np.float32(board["momentum"])),
           "phase3_epochs": board["phase3_epochs"] or int(cfg.phase3_epochs), "seed": int(cfg.seed),
           "norm_bound": float(cfg.norm_bound), "weight_cap": float(cfg.weight_cap), "min_sites": min_sites,
           "timeout": timeout, "wait": wait}
    work = (work or out.parent / f".{out.name}.flower").absolute()
    _launch(job, work, host, port, superlink_addr, certs, sites, ssl_ca_certfile, cfg.devices)
    rec = json.loads((out / "federation.json").read_text())
    for r in rec["round_records"]:
        failed = ", ".join(f"device {d}" for d in r["failed"])
        click.echo(f"head round {r['round']}: {len(r['devices'])} board(s) averaged"
                   + (f"; failed: {failed}" if failed else ""))
    for d, m in sorted(rec["phase3"].items(), key=lambda kv: int(kv[0])):
        if "error" in m:
            click.echo(f"device {d}: Phase 3 on the board failed ({m['error']})")
        else:
            acc, far = m.get("accuracy"), m.get("false_alarm_rate")
            click.echo(f"device {d}: Phase 3 on the board: threshold {m['threshold']:.4f}, test accuracy "
                       + (f"{acc:.3f}" if acc is not None else "-") + ", false alarms "
                       + (f"{far:.3f}" if far is not None else "-"))
    click.echo(f"results: {out}/federation.json, {out}/heads.npz")


def _sites(sites_file: Path | None, host: str, devices: int, insecure: bool, names=None) -> dict[int, str] | None:
    """device -> public key of --sites (None without it); off loopback it is required. ``names``: a
    fleet-folder run's device names, which the keys of sites.toml are."""
    from fedtiny.trainer.flower import identity
    from fedtiny.trainer.flower.processes import is_loopback

    if sites_file is None:
        if not is_loopback(host):
            raise UserError(f"off loopback ({host}) node authentication is required: give --sites sites.toml "
                            "(each device's public key, from `fedtiny site keygen`)")
        return None
    if insecure:
        raise UserError("--sites (node authentication) needs TLS: give --ssl-certfile/--ssl-keyfile/"
                        "--ssl-ca-certfile instead of --insecure")
    try:
        sites = identity.load_sites(sites_file, names)
    except ValueError as e:
        raise UserError(f"--sites {e}") from None
    missing = sorted(set(range(devices)) - set(sites))
    extra = sorted(set(sites) - set(range(devices)))
    if missing or extra:
        raise UserError(f"--sites {sites_file}: " + "; ".join(
            ([f"no key for device(s) {', '.join(map(str, missing))}"] if missing else [])
            + ([f"device(s) {', '.join(map(str, extra))} not in this {devices}-device run"] if extra else [])))
    return sites


def _register(sites: dict[int, str], home: Path, work: Path) -> dict[str, int]:
    """Register every site's key with the SuperLink; {device: node id} (as JSON keys) for the ServerApp."""
    from fedtiny.trainer.flower import identity

    nodes = {}
    for dev, key in sorted(sites.items()):
        try:
            nodes[str(dev)] = identity.register(home, key, work / "registered.json")
        except RuntimeError as e:
            raise UserError(f"device {dev}: {e}") from None
    click.echo(f"registered {len(nodes)} site key(s) with the SuperLink (node authentication)")
    return nodes


def merged_config(ctx, options: dict, config_file: Path | None) -> dict:
    """TrainConfig fields: the command line's explicit options over ``config_file``'s over defaults."""
    from click.core import ParameterSource

    fields = config_fields(options, server=True)
    if config_file is None:
        return fields
    try:
        base = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"--config {config_file}: {e}") from None
    if not isinstance(base, dict):
        raise UserError(f"--config {config_file}: expected a JSON object of run settings")
    try:
        base = file_values(ctx, base, f"--config {config_file}")
    except click.BadParameter as e:
        raise UserError(e.format_message()) from None
    out = dict(base)
    for k, v in fields.items():
        if ctx.get_parameter_source(k) != ParameterSource.DEFAULT or k not in base:
            out[k] = v
    return out


def _follow(log: Path, status: Path, flwr_run, link) -> None:
    """Echo the ServerApp's progress lines until it wrote its status (or flwr run / the SuperLink died)."""
    from fedtiny.trainer.flower.processes import tail

    pos, ended, last = 0, None, False
    while True:
        last = last or status.exists()       # one more pass after the status: the log's last lines
        if log.exists():
            with open(log, "rb") as f:
                f.seek(pos)
                chunk = f.read()
            cut = chunk.rfind(b"\n") + 1
            pos += cut
            for line in chunk[:cut].decode(errors="replace").splitlines():
                if "fedtiny:" in line:
                    click.echo(line[line.index("fedtiny:") + 9:])
        if last:
            return
        if link is not None and link.poll() is not None:
            raise UserError(f"flower-superlink exited with code {link.returncode}")
        if flwr_run.poll() is not None:
            ended = ended or time.monotonic()
            if time.monotonic() - ended > 10:      # the status file may trail flwr run's exit
                raise UserError(f"flwr run ended (code {flwr_run.returncode}) before the run finished{tail(log)}")
        time.sleep(0.5)


def _summary(report: dict, out: Path) -> None:
    from fedtiny.train_cli import print_summary

    print_summary(report, out)
    click.echo(f"run directory: {out}")


# --- site ----------------------------------------------------------------------------------------
def _builtin(ctx, param, value):
    if value is None:
        return None
    name, sep, k = value.partition(":")
    if name not in ("electrical", "mechanical") or not sep or not k.isdigit():
        raise click.BadParameter("give NAME:K with NAME electrical or mechanical, e.g. electrical:2")
    return name, int(k)


@click.group(invoke_without_command=True)
@click.option("--data", type=click.Path(exists=True, path_type=Path), default=None,
              help="This site's data: one device folder of a fleet (FLEET/pump-07: the site reads that folder "
                   "and nothing else, and is the device of that name), or any format `fedtiny train "
                   "--dataset` reads (a classData .csv or a folder of CWRU .mat files; the site keeps device "
                   "K's pool of it).")
@click.option("--builtin", callback=_builtin, default=None, metavar="NAME:K",
              help="Demo data instead of --data: device K of a built-in fleet (electrical:K, mechanical:K).")
@click.option("--device-id", type=click.IntRange(0), default=None,
              help="The device K this site holds [a device folder: its place in the run's device names].")
@click.option("--server", "server_addr", default=None, metavar="HOST:PORT",
              help="The SuperLink of `fedtiny server` (its --host/--port). Required.")
@click.option("--insecure", is_flag=True, help=INSECURE_HELP)
@click.option("--root-certificates", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CA certificate (PEM) that verifies the SuperLink's TLS certificate.")
@click.option("--auth-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="This site's private key (`fedtiny site keygen`) for Flower node authentication; the "
                   "server's sites.toml lists its .pub for this device. Required off loopback.")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="This site's local run copy: its device's artifacts and test windows, logs "
                   "[default: site-devK].")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port of the SuperNode's local API for its ClientApp processes, on 127.0.0.1 (0: a free one).")
@click.option("--board-port", default=None, metavar="PORT",
              help="Serve through a board on this serial port (a real board, or the pty of `fedtiny flash --board "
                   "qemu-m4`) flashed with this device's firmware built with --trainable-head: the board trains "
                   "(head rounds and Phase 3 of `fedtiny server --board-run`); this process only sends it windows "
                   "and weights and reads its head back.")
@click.option("--board-timeout", default=60.0, show_default=True, type=click.FloatRange(1),
              help="--board-port: seconds of silence from the board before a command fails.")
@click.pass_context
@friendly
def site(ctx, data, builtin, device_id, server_addr, insecure, root_certificates, auth_key, work, port, board_port,
         board_timeout):
    """Serve one device's data to a federation: a Flower SuperNode plus fedtiny's site worker.

    The site trains on its own windows when the server asks and sends back weights and metrics;
    at the end it runs Phase 3 (fine-tune, threshold, INT8) and keeps the device's artifacts,
    including its test windows, in --work (run `fedtiny build --run WORK --device K` here).
    Stop it with Ctrl-C.
    """
    import tempfile

    from fedtiny.trainer.flower import processes as fp

    if ctx.invoked_subcommand is not None:
        return
    if server_addr is None:
        raise UserError("give --server HOST:PORT (the SuperLink of `fedtiny server`)")
    if (data is None) == (builtin is None):
        raise UserError("give exactly one of --data PATH or --builtin NAME:K")
    name = None
    if builtin is not None:
        dataset, k = builtin
        if device_id is not None and device_id != k:
            raise UserError(f"--builtin {dataset}:{k} holds device {k}, not --device-id {device_id}")
        device_id = k
    else:
        dataset = str(data.absolute())
        if (data / "labels.csv").is_file():
            name = data.absolute().name                 # a fleet's device folder: the device's name
        elif device_id is None:
            raise UserError("--device-id is required with --data (unless --data is a device folder with a "
                            "labels.csv)")
    try:
        host, _ = fp.split_address(server_addr)
    except ValueError as e:
        raise UserError(f"--server: {e}") from None
    _check_tls(host, insecure, root_certificates is not None, "the server")
    if auth_key is None and not fp.is_loopback(host):
        raise UserError(f"off loopback ({host}) node authentication is required: give --auth-key "
                        "(make one with `fedtiny site keygen`)")
    work = (work or Path(f"site-{name}" if name else f"site-dev{device_id:02d}")).absolute()
    work.mkdir(parents=True, exist_ok=True)
    from fedtiny.trainer.flower import gate
    from fedtiny.trainer.flower.site_service import SiteService
    from fedtiny.trainer.flower.site_status import Follow, status_lines
    from fedtiny.trainer.flower.site_worker import SiteWorker, make_key
    from fedtiny.trainer.tfquiet import import_tensorflow

    log_path = work / "site.log"

    def log(line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with open(log_path, "a") as f:
            f.write(f"{stamp} {line}\n")
        click.echo(f"{stamp} {line}")

    service = SiteService(dataset, device_id, work, name)
    if board_port is not None:       # the board trains; this process is its serial bridge (no TensorFlow)
        service = _board_service(board_port, service, board_timeout, log)
    else:
        import_tensorflow()          # once, here: every request of this site runs in this process
    sock_dir = Path(tempfile.mkdtemp(prefix="fedtiny-site-"))   # short path: Unix sockets allow ~100 bytes
    key_file = sock_dir / "key"
    worker = SiteWorker(service, sock_dir / "worker.sock", make_key(key_file), log)
    worker.start()
    node = None
    try:
        nc = {"site-socket": str(sock_dir / "worker.sock"), "site-key": str(key_file)}
        if device_id is not None:
            nc["device-id"] = device_id
        port = port or fp.free_port()
        node_log = work / "supernode.log"
        refusals = work / "refusals.log"
        # only fedtiny's ClientApp is ever started by this SuperNode (trainer/flower/gate.py)
        node = fp.start(fp.supernode_cmd(server_addr, port, nc, root_certificates, auth_key), node_log,
                        fp.child_env(FLWR_HOME=work / "flwr-home", **gate.install(work / "gate", refusals)))
        log(f"device {name or device_id} ({dataset}) serving in process {os.getpid()}; SuperNode -> {server_addr} "
            f"(log {node_log})")
        node_out, refused = Follow(node_log), Follow(refusals)
        try:
            while node.poll() is None:
                for line in status_lines(node_out.read(), server_addr) + refused.read().splitlines():
                    log(line.split(" ", 1)[1] if line[:2].isdigit() and line[2:3] == ":" else line)
                time.sleep(0.5)
        except KeyboardInterrupt:
            log("stopped")
            return
        raise UserError(f"flower-supernode exited with code {node.returncode}{fp.tail(node_log)}")
    finally:
        fp.stop(node)
        worker.stop()
        if board_port is not None:
            service.close()
        import shutil

        shutil.rmtree(sock_dir, ignore_errors=True)


def _board_service(port: str, data, idle: float, log):
    """The board site's service, its board checked (one error line when it cannot serve)."""
    from fedtiny.bench.board_site import BoardSite
    from fedtiny.bench.rundata import BenchError

    board = BoardSite(port, data, idle=idle, log=log)
    try:
        info = board.open()
    except BenchError as e:
        raise UserError(str(e)) from None
    log(f"board {port}: {board.banner.board}, model {board.banner.model_hash[:12]}, trainable head {info.n_in} -> "
        f"{info.n_hidden} -> {info.n_classes} (batch {info.batch}, up to {info.max_windows} windows, plan "
        f"{info.plan_bytes} B)")
    return board


@site.command("keygen")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("site.key"), show_default=True,
              help="The private key file; the public key goes next to it as OUT.pub.")
@friendly
def keygen(out):
    """Write this site's key pair for node authentication (P-384, OpenSSH format).

    Keep the private key on the site (`fedtiny site --auth-key OUT ...`); give OUT.pub to the
    server's operator, who lists it for this site's device in sites.toml (`fedtiny server --sites`).
    """
    from fedtiny.trainer.flower import identity

    try:
        priv, pub = identity.keygen(out)
    except FileExistsError as e:
        raise UserError(str(e)) from None
    click.echo(f"private key: {priv} (keep it here; mode 0600)")
    click.echo(f"public key:  {pub} (the server lists it in sites.toml: K = \"{pub.name}\" for device K)")

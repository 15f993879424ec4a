"""`fedtiny server`'s device names of a fleet-folder run: with --sites they are sites.toml's keys
(--device-names then optional, and checked); without it --device-names, else dev00..devNN."""
from __future__ import annotations

import pytest


def test_sites_names_the_devices_and_device_names_must_agree():
    from fedtiny.errors import UserError
    from fedtiny.options import server_device_names

    sites = ["pump-b", "pump-a", "pump-c"]
    assert server_device_names(10, False, None, sites) == (3, ("pump-a", "pump-b", "pump-c"))
    assert server_device_names(3, True, "pump-c,pump-a,pump-b", sites) == (3, ("pump-a", "pump-b", "pump-c"))
    with pytest.raises(UserError, match="--device-names pump-a,pump-x disagrees with --sites s.toml"):
        server_device_names(10, False, "pump-a,pump-x", sites, "s.toml")
    with pytest.raises(UserError, match="--devices 4 disagrees with --sites"):
        server_device_names(4, True, None, sites)


def test_without_sites_device_names_or_numbered_defaults():
    from fedtiny.errors import UserError
    from fedtiny.options import server_device_names

    assert server_device_names(2, True, "b, a", None) == (2, ("a", "b"))
    assert server_device_names(3, False, None, None) == (3, ("dev00", "dev01", "dev02"))
    with pytest.raises(UserError, match="names 1 devices, --devices is 2"):
        server_device_names(2, True, "a", None)
    with pytest.raises(UserError, match="given twice"):
        server_device_names(2, True, "a,A", None)


def test_sites_toml_keys_are_device_names(tmp_path):
    from fedtiny.trainer.flower import identity

    for n in ("a", "b"):
        identity.keygen(tmp_path / f"{n}.key")
    s = tmp_path / "sites.toml"
    s.write_text('[sites]\n"pump-b" = "b.key.pub"\n"pump-a" = "a.key.pub"\n')
    assert identity.site_names(s) == ["pump-a", "pump-b"]
    keys = identity.load_sites(s, ["pump-a", "pump-b"])
    assert keys[0] == (tmp_path / "a.key.pub").read_text().strip() and sorted(keys) == [0, 1]
    with pytest.raises(ValueError, match="'pump-b' is not a device of this run"):
        identity.load_sites(s, ["pump-a", "pump-c"])
    s.write_text('[sites]\n0 = "a.key.pub"\n"dev01" = "b.key.pub"\n')
    assert identity.site_names(s) == ["dev00", "dev01"] and sorted(identity.load_sites(s)) == [0, 1]
    s.write_text('[sites]\n"Pump" = "a.key.pub"\n"pump" = "b.key.pub"\n')
    with pytest.raises(ValueError, match="listed twice"):
        identity.site_names(s)


def test_cli_device_names_disagreeing_with_sites_is_one_error_line(tmp_path):
    from click.testing import CliRunner

    from fedtiny.cli import main

    s = tmp_path / "sites.toml"
    s.write_text('[sites]\n"pump-a" = "a.key.pub"\n"pump-b" = "b.key.pub"\n')
    res = CliRunner().invoke(main, ["server", "--public", "electrical", "--sites", str(s), "--device-names",
                                    "pump-a,pump-c", "--out", str(tmp_path / "R")])
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert lines == [f"error: --device-names pump-a,pump-c disagrees with --sites {s}, whose devices are "
                     "pump-a,pump-b (leave --device-names out with --sites)"]
    assert not (tmp_path / "R").exists()

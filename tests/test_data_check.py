"""``fedtiny data check``: summaries, problems and confounds; exit 0 with warnings, 2 when nothing is
usable."""
from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from fedtiny.cli import main
from test_fleet_formats import make_fleet, sine


def run(path):
    res = CliRunner().invoke(main, ["data", "check", str(path)])
    return res.exit_code, res.output


def test_fleet_folder_summary_and_problems(tmp_path):
    root = make_fleet(tmp_path / "F")
    c = root / "pump-c"                                  # fault only, at a rate no other class has
    c.mkdir()
    np.save(c / "f.npy", sine(2000, 2000, 60)[:, None].repeat(2, axis=1))
    (c / "g.json").write_text('{"payload": {"interval_ms": 0.125, "sensors": [{"name": "Ia"}, {"name": "Va"}], '
                              '"values": [[1, 2], [3, 4]]}}')
    (c / "labels.csv").write_text("f.npy,fault\ng.json,leak\n")
    code, out = run(root)
    assert code == 0, out
    lines = out.splitlines()
    assert any(x.startswith("pump-a: normal 1.5 s (2 groups), fault 3.5 s (4 groups); 2000, 4000 Hz; channels Ia, Va")
               for x in lines)
    warn = [x for x in lines if x.startswith("warning: ")]
    assert any("pump-b: e.csv is unlabelled" in w for w in warn)
    assert any("device pump-c has no normal data" in w for w in warn)
    assert any("label leak is not in fleet.toml's classes" in w for w in warn)
    assert any("class leak is on one device only (pump-c)" in w for w in warn)
    assert any("class leak is recorded only at 8000 Hz" in w for w in warn)
    assert not any("unit" in w for w in warn)


def test_fleet_folder_unit_that_cannot_be_converted(tmp_path):
    root = make_fleet(tmp_path / "F")
    with open(root / "fleet.toml", "a") as fh:
        fh.write('[units]\nIa = "A"\nVa = "V"\n')
    code, out = run(root)
    warn = [x for x in out.splitlines() if x.startswith("warning: ")]
    assert warn.count("warning: device pump-b: d.json: channel Va is in 'pu', the run's unit is 'V', and there "
                      "is no exact conversion between them (known: g <-> m/s^2, mV <-> V, mA <-> A, uV <-> V, "
                      "uA <-> A, \u00b5V <-> V, \u00b5A <-> A, mg <-> g)") == 1, out


def test_cwru_healthy_rate_confound(tmp_path):
    from realdata import write_cwru_tree

    code, out = run(write_cwru_tree(tmp_path / "cwru", seconds=0.5, extras=True))
    assert code == 0, out
    assert "class normal is recorded only at 48000 Hz and no other class is" in out
    assert "48 kHz drive-end fault record" in out            # what the loader skipped


def test_nothing_usable_is_exit_2(tmp_path):
    (tmp_path / "F" / "pump-a").mkdir(parents=True)
    (tmp_path / "F" / "pump-a" / "a.csv").write_text("time,Ia\n0,1\n0.001,2\n")
    code, out = run(tmp_path / "F")
    assert code == 2 and out.splitlines()[-1].startswith("error: ")
    assert "a.csv is unlabelled" in out
    code, out = run(tmp_path / "none")
    assert code == 2 and "error:" in out and "Traceback" not in out

"""Every bad fleet folder the fleet format names, through the command line: `fedtiny train --fleet`
prints one `error:` line naming the problem, exits 2 and leaves no run directory behind. Also the
recordings that cannot be read at all (a corrupt WAV, a .npy that is not one, a JSON that is not
Edge Impulse's), which the reader-level list in test_fleet_formats.py does not damage."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from test_fleet_formats import BAD, make_fleet

UNREADABLE = [
    ("unreadable WAV", lambda r: (r / "pump-a" / "b.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk"),
     "b.wav: unreadable WAV"),
    ("unreadable .npy", lambda r: (r / "pump-b" / "c.npy").write_bytes(b"not an array"), "c.npy: unreadable .npy (not a NumPy array file)"),
    ("JSON that is not Edge Impulse's", lambda r: (r / "pump-b" / "d.json").write_text('{"values": [1, 2]}'),
     "d.json: not an Edge Impulse data-acquisition file"),
    ("a .npy of text", lambda r: np.save(r / "pump-b" / "c.npy", np.array(["a", "b"])), "expected a non-empty numeric"),
]


@pytest.mark.parametrize("what,damage,message", BAD + UNREADABLE, ids=[b[0] for b in BAD + UNREADABLE])
def test_train_fleet_on_a_bad_folder_is_one_error_line_and_exit_2(tmp_path, what, damage, message):
    from fedtiny.cli import main

    root = make_fleet(tmp_path / "F")
    pool = make_fleet(tmp_path / "P")                             # a small public pool: no generator to run
    damage(root)
    out = tmp_path / "R"
    res = CliRunner().invoke(main, ["train", "--fleet", str(root), "--public", str(pool), "--window-ms", "20",
                                    "--hop-ms", "10", "--block-ms", "100", "--out", str(out)])
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert res.exit_code == 2, res.output
    assert lines[-1].startswith("error: ") and message in lines[-1], lines[-1]
    assert sum(x.startswith("error: ") for x in lines) == 1 and "Traceback" not in res.output
    assert not out.exists()                                       # nothing half-written

"""A deployed site checks that its device folder fits the run its server started (the run's rate,
channels, units and classes, recorded in config.json) before it serves anything: otherwise it
refuses the run with one status line "refused (wrong dataset: ...)", and the server records that
device's replies as failed instead of waiting for it or crashing."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from test_fleet_formats import WINDOWING, make_fleet

pytest.importorskip("flwr")


def _rewrite(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.fixture()
def fleet(tmp_path):
    """The server's run (a fleet-folder public pool with units, devices pump-a, pump-b) and a
    function that gives one device folder, with the fleet's fleet.toml, a folder of its own."""
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.data.fleetdir import run_fields

    src = make_fleet(tmp_path / "F")
    pub = make_fleet(tmp_path / "P")
    with open(pub / "fleet.toml", "a") as fh:
        fh.write('[units]\nIa = "A"\nVa = "pu"\n')
    fields = run_fields(str(pub), None, WINDOWING, cache=False)       # what `fedtiny server --public P` resolves
    run = TrainConfig(**fields, public=str(pub), devices=2, device_names=("pump-a", "pump-b"), method="fedavg")

    def site(name, k=0):
        own = tmp_path / f"site-{name}-{k}"
        own.mkdir()
        shutil.copy(src / "fleet.toml", own / "fleet.toml")
        shutil.copytree(src / name, own / name)
        return own / name

    return run, site


def _service(folder, tmp_path):
    from fedtiny.trainer.flower.site_service import SiteService

    return SiteService(str(folder), None, tmp_path / f"work-{folder.parent.name}", folder.name)


def test_the_run_records_the_units_a_site_converts_to(fleet, tmp_path):
    """config.json holds the run's rate, channels, units and classes; a site whose fleet.toml states
    Ia in mA (its numbers 1000 x larger) trains on the same amperes as one in A."""
    run, site = fleet
    d = run.to_dict()
    assert d["channels"] == ["Ia", "Va"] and d["channel_units"] == ["A", "pu"]
    assert d["rate_hz"] == 2000.0 and d["class_names"] == ["normal", "fault"]
    folders = [site("pump-a", k) for k in range(2)]
    for f in folders:                                 # the WAV is in fractions of full scale: leave it out
        _rewrite(f / "labels.csv", "b.wav,fault,,\n", "")
    with open(folders[1].parent / "fleet.toml", "a") as fh:
        fh.write('[units]\nIa = "mA"\n')
    a = folders[1] / "a.csv"
    rows = [r.split(";") for r in a.read_text().splitlines()]
    a.write_text("\n".join([";".join(rows[0])] + [f"{t};{float(i) * 1000!r};{v}" for t, i, v in rows[1:]]) + "\n")
    got = []
    for f in folders:
        s = _service(f, tmp_path)
        assert s.greet(d) == (0, None)
        got.append(next(iter(s._data.values())).splits)
    for part in ("test", "phase2_train", "phase3_val"):
        x0, x1 = getattr(got[0], part).x, getattr(got[1], part).x
        assert len(x0) and np.allclose(x0, x1, rtol=1e-9, atol=1e-12)


WRONG = [
    ("units that do not convert", "pump-a", lambda f: open(f.parent / "fleet.toml", "a").write('[units]\nIa = "V"\n'),
     "wrong dataset: ", "a.csv: channel Ia is in 'V', the run's unit is 'A'"),
    ("a rate that cannot be resampled", "pump-b", lambda f: _rewrite(f.parent / "fleet.toml", "rate_hz = 2000",
                                                                     "rate_hz = 2000.13"),
     "wrong dataset: ", "c.npy: 2000.13 Hz cannot be resampled to the run's 2000 Hz"),
    ("a channel the run needs is missing", "pump-b", lambda f: _rewrite(f / "d.json", '"name": "Va"', '"name": "Vb"'),
     "wrong dataset: ", "d.json: no channel Va"),
    ("a class outside the run's", "pump-b", lambda f: _rewrite(f / "labels.csv", "d.json,normal", "d.json,leak"),
     "wrong dataset: ", "label 'leak' is not a class of this fleet (normal, fault)"),
    ("a device the run does not name", "pump-a", lambda f: f.rename(f.parent / "pump-z"),
     "wrong dataset: ", "this site holds device 'pump-z', which the run does not name (pump-a, pump-b)"),
]


@pytest.mark.parametrize("what,name,damage,prefix,message", WRONG, ids=[w[0] for w in WRONG])
def test_a_folder_that_does_not_fit_the_run_is_refused(fleet, tmp_path, what, name, damage, prefix, message):
    run, site = fleet
    folder = site(name)
    damage(folder)
    if not folder.exists():
        folder = folder.parent / "pump-z"
    service = _service(folder, tmp_path)
    dev, why = service.greet(run.to_dict())
    assert why is not None and why.startswith(prefix) and message in why, why
    assert dev == (-1 if name == "pump-a" and folder.name == "pump-z" else ["pump-a", "pump-b"].index(name))
    assert not service._sites                                   # nothing was built to serve it


def test_a_site_without_a_device_folder_refuses_a_fleet_run(fleet, tmp_path):
    from fedtiny.trainer.flower.site_service import SiteService

    run, _ = fleet
    dev, why = SiteService("electrical", 1, tmp_path / "w").greet(run.to_dict())
    assert dev == 1 and why.startswith("wrong dataset: the run trains on a fleet folder's devices (pump-a, pump-b)")


def test_the_site_says_refused_once_and_the_server_records_a_failed_reply(fleet, tmp_path, monkeypatch):
    """The site worker answers the hello over its socket with the refusal and logs the status line
    once; the reply Flower carries (``reply_content``) reaches the server's backend, which notes the
    refusal, does not wait for that device, and turns every request to it into a failed Reply."""
    from types import SimpleNamespace

    from fedtiny.trainer.backends import Task
    from fedtiny.trainer.flower import backend as fb
    from fedtiny.trainer.flower.messages import REPLY_KEYS, reply_content
    from fedtiny.trainer.flower.site_worker import SiteWorker, call, make_key

    run, site = fleet
    folder = site("pump-b")
    _rewrite(folder / "labels.csv", "d.json,normal", "d.json,leak")
    lines = []
    sock = tmp_path / "s"
    sock.mkdir()
    worker = SiteWorker(_service(folder, tmp_path), sock / "w.sock", make_key(sock / "key"), lines.append).start()
    try:
        answers = [call(str(sock / "w.sock"), str(sock / "key"), ("hello", None, {}, run.to_dict(), None))
                   for _ in range(2)]
    finally:
        worker.stop()
    assert answers[0] == answers[1] and answers[0][0] == 1
    refused = [x for x in lines if x.startswith("refused (wrong dataset: ")]
    assert len(refused) == 1 and "label 'leak'" in refused[0], lines
    content = reply_content(*answers[0][:1], refused=answers[0][1])
    assert set(content["reply"]) <= REPLY_KEYS

    monkeypatch.setattr(fb, "Message", lambda content, dst_node_id, **kw: SimpleNamespace(
        metadata=SimpleNamespace(dst_node_id=dst_node_id)))

    class Grid:
        def get_node_ids(self):
            return [7, 8]

        def push_messages(self, msgs):
            for m in msgs:
                m.metadata.message_id = f"m-{m.metadata.dst_node_id}"
            self.sent = msgs
            return [m.metadata.message_id for m in msgs]

        def pull_messages(self, ids):                 # every site answers at once
            out = []
            for m in self.sent:
                if m.metadata.message_id not in ids:
                    continue
                n = m.metadata.dst_node_id
                c = content if n == 8 else reply_content(0)
                out.append(SimpleNamespace(metadata=SimpleNamespace(src_node_id=n, reply_to_message_id=m.metadata.message_id),
                                           content=c, has_error=lambda: False))
            return out

    def no_wait(seconds):
        # the exchange's first ask comes a fraction of a second after its push (backend.exchange);
        # only waiting for a site to connect sleeps a whole second
        if seconds >= 1.0:
            raise AssertionError("the server waited for a site that refused the run")

    monkeypatch.setattr(fb.time, "sleep", no_wait)
    notes = []
    b = fb.FlowerBackend(Grid(), run.to_dict(), 2, 10, 600, note=notes.append)
    b.connect_all()                                   # device 0 connected, device 1 refused: no wait
    assert b.nodes == {0: 7} and b.refused == {1: refused[0][len("refused ("):-1]}
    assert any("site of device 1 (node 8) refused the run: wrong dataset: " in n for n in notes), notes
    rep = b._send("fit", [Task(1, [np.zeros(2)], {"phase": "phase1"})], wait=600)[0]
    assert not rep.ok and rep.error.startswith("site refused the run (wrong dataset: ")
    assert json.dumps(rep.error)                       # one line, bounded

"""The run store on shared storage: a URL root (fsspec), mirrored locally, resumable elsewhere."""

from __future__ import annotations

import json

import pytest
from helpers.crash import WorkerLost, crash_after_checkpoints

from genforge.core import RunStore
from genforge.core.runner import create_run, run_all
from genforge.core.testing.toy import ToyPlugin


def test_url_store_pushes_every_file_and_resumes_on_another_machine(tmp_path, monkeypatch, genforge_pm):
    shared = tmp_path / "bucket"
    url = f"file://{shared}/genforge"
    monkeypatch.setenv("GENFORGE_HOME", url)
    monkeypatch.setenv("GENFORGE_MIRROR", str(tmp_path / "machine-a"))
    pm = genforge_pm(ToyPlugin())
    run = create_run("toy-gaussian", spec={"train": {"max_steps": 12, "checkpoint_every": 5}}, pm=pm)
    assert run.remote == f"{url}/runs/{run.id}" and str(tmp_path / "machine-a") in str(run.path)
    with crash_after_checkpoints(1), pytest.raises(WorkerLost, match="worker lost"):
        run_all(run, pm)
    remote_run = shared / "genforge" / "runs" / run.id
    assert (remote_run / "checkpoints" / "step-00000005.pt").exists()
    assert json.loads((remote_run / "status.json").read_text())["state"] == "failed"

    # Machine B has never seen the run: it pulls it from the URL and resumes from step 5.
    monkeypatch.setenv("GENFORGE_MIRROR", str(tmp_path / "machine-b"))
    store = RunStore()
    assert [r.id for r in store.all()] == [run.id]
    assert (store.get("latest").path / "checkpoints" / "step-00000005.pt").exists()  # `show latest` sees everything
    again = store.get(run.id[:12])
    assert str(tmp_path / "machine-b") in str(again.path)
    assert (again.path / "checkpoints" / "step-00000005.pt").exists()
    run_all(again, pm)
    model = json.loads((remote_run / "training.json").read_text())
    assert model["resumed_from"] == 5 and model["step"] == 12
    for name in ("toy.safetensors", "metrics.json", "report.md", "samples.json", "training.json"):
        assert (remote_run / name).exists(), name
    assert sorted(p.name for p in (remote_run / "checkpoints").iterdir()) == ["digests.json", "step-00000010.pt", "step-00000012.pt"]
    samples = json.loads((remote_run / "samples.json").read_text())
    assert (remote_run / samples["path"]).exists()  # recorded relative to the run folder
    # no temp files or local markers on the shared store: only the lease's records (the newest marks it released)
    assert [p.relative_to(remote_run).parts[0] for p in remote_run.rglob(".*")] == [".lease"]
    assert not list(remote_run.rglob("*.tmp"))


@pytest.mark.parametrize("url", [False, True])
def test_run_ids_never_leave_the_store(tmp_path, monkeypatch, genforge_pm, url):
    """`show ../../outside`, `resume ../../outside`, the flow's `run` parameter: refused, for local and URL stores."""
    from genforge.core import RunNotFound

    root = f"file://{tmp_path}/bucket/genforge" if url else str(tmp_path / "store")
    monkeypatch.setenv("GENFORGE_MIRROR", str(tmp_path / "mirror"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "spec.yaml").write_text("generator: toy-gaussian\n")
    if url:  # a folder beside runs/ on the shared store
        victim = tmp_path / "bucket" / "victim"
        victim.mkdir(parents=True)
        (victim / "spec.yaml").write_text("generator: toy-gaussian\n")
    store = RunStore(root)
    run = create_run("toy-gaussian", spec={"train": {"max_steps": 2}}, pm=genforge_pm(ToyPlugin()), root=root)
    for bad in ("../../outside", "../victim", str(outside), "..", "a/b", "run\\x"):
        with pytest.raises(RunNotFound, match="is not a run"):
            store.get(bad)
    assert not (tmp_path / "mirror" / "victim").exists() and not list(tmp_path.glob("mirror/*/victim"))
    with pytest.raises(RunNotFound, match="is not a run id"):
        store.create("toy-gaussian", "../escape")
    assert store.get(run.id).path == run.path and store.get(str(run.path)).id == run.id  # ids and this store's folders still work


def test_urls_are_recorded_and_shown_without_credentials():
    from genforge.core.store import redact_url

    assert redact_url("https://user:pw@host:8443/p/f.smi?X-Amz-Signature=abc") == "https://<redacted>@host:8443/p/f.smi?<redacted>"
    assert redact_url("s3://KEY:SECRET@bucket/genforge") == "s3://<redacted>@bucket/genforge"
    assert redact_url("http://[::1]:4200/api") == "http://[::1]:4200/api" and redact_url("data/x.smi") == "data/x.smi"
    assert str(RunStore("s3://KEY:SECRET@bucket/genforge")) == "s3://<redacted>@bucket/genforge"
    assert redact_url("simplecache::s3://K:S@b/x") == "simplecache::s3://<redacted>@b/x"  # each part of an fsspec chain
    assert redact_url("memory://Foo/Bar") == "memory://Foo/Bar"  # nothing but scheme, host and path: as given
    assert redact_url("http://u:p@h:notaport/x?t=1") == "http://<redacted>@h:notaport/x?<redacted>"
    # an allow-list: scheme, host, port and path are kept; a fragment, ;parameters and whatever else is there are not
    assert redact_url("https://h.example:8443/d/f.csv#access_token=SECRET") == "https://h.example:8443/d/f.csv#<redacted>"
    assert redact_url("https://h/d;token=SECRET/f.csv;v=2") == "https://h/d;<redacted>/f.csv;<redacted>"
    assert redact_url("simplecache::https://h/f.csv?sig=S#t=T") == "simplecache::https://h/f.csv?<redacted>#<redacted>"
    assert redact_url("s3://bucket/runs/x") == "s3://bucket/runs/x" and redact_url("file:///tmp/x") == "file:///tmp/x"


@pytest.mark.parametrize("secret", ["#access_token=SECRET", ";token=SECRET", "?X-Amz-Signature=SECRET"])
def test_a_token_anywhere_in_a_url_reaches_no_file_and_no_terminal(genforge_home, toy_dist, secret):
    """spec.yaml, status.json (the error, which quotes the URL) and stderr hold the URL redacted; this process can still use it."""
    from genforge.core import store as store_module
    from genforge.core.store import redact_secrets, unredact
    from genforge.flows.cli import invoke

    url = f"https://data.example/prices.csv{secret}"
    r = invoke("run", "toy-gaussian", "--no-prefect", "--set", f"data.path={url}", env={"GENFORGE_PLUGINS": "toy"})
    assert r.code == 2 and "is not a file" in r.stderr  # the toy reads local files: the run fails, quoting the URL
    assert "SECRET" not in r.stdout + r.stderr and "<redacted>" in r.stderr
    written = [p for p in genforge_home.rglob("*") if p.is_file() and b"SECRET" in p.read_bytes()]
    assert written == []
    run_dir = next((genforge_home / "runs").iterdir())
    assert "<redacted>" in (run_dir / "spec.yaml").read_text() and "<redacted>" in (run_dir / "status.json").read_text()
    assert unredact(redact_secrets({"p": url}))[0] == {"p": url}  # the original, in this process's memory only
    store_module._unredacted.clear()
    assert unredact(redact_secrets({"p": "s3://bucket/x"}))[0] == {"p": "s3://bucket/x"}


def test_a_store_url_with_credentials_is_not_written_into_the_mirror(tmp_path, monkeypatch, genforge_pm):
    """The mirror's marker holds the store URL redacted; runs found through it still push to the store."""
    from genforge.core import ConfigError, Run
    from genforge.core import store as store_module

    url = f"memory://user:pw@bucket-{tmp_path.name}/genforge"  # credentials in the URL; nothing on disk outside tmp_path
    monkeypatch.setenv("GENFORGE_HOME", url)
    monkeypatch.setenv("GENFORGE_MIRROR", str(tmp_path / "mirror"))
    run = create_run("toy-gaussian", spec={"train": {"max_steps": 2}}, pm=genforge_pm(ToyPlugin()))
    assert not [p for p in (tmp_path / "mirror").rglob("*") if p.is_file() and b"pw" in p.read_bytes()]
    store_module._unredacted.clear()  # another process of this machine: the store URL comes from GENFORGE_HOME
    store_module._stores.clear()
    assert Run(run.path).remote == run.remote
    monkeypatch.setenv("GENFORGE_HOME", str(tmp_path / "elsewhere"))  # a process that does not know that store: one clear line
    store_module._unredacted.clear()
    store_module._stores.clear()
    with pytest.raises(ConfigError, match="belongs to the store memory://<redacted>@"):
        Run(run.path)


def _newest(lease_dir) -> dict:
    return json.loads(sorted(lease_dir.glob("g-*.json"))[-1].read_text())


def _write_record(lease_dir, holder: str, expires: float, token: str = "theirs") -> None:
    """Another machine's record, as its lease would write it: the next generation."""
    import time

    from fsspec.implementations.local import LocalFileSystem

    from genforge.core.store.mirror import create_if_absent

    while True:  # as a lease writes: g + 1, created only if absent (the holder may be renewing at this moment)
        found = sorted(lease_dir.glob("g-*.json"))
        generation = int(found[-1].name[2:14]) + 1 if found else 1
        record = {"holder": holder, "token": token, "generation": generation, "renewed": time.time(), "expires": expires, "released": False}
        if create_if_absent(LocalFileSystem(), str(lease_dir / f"g-{generation:012d}.json"), json.dumps(record).encode()):
            return


def test_a_run_on_a_shared_store_is_leased_so_two_machines_never_train_it(tmp_path, monkeypatch, genforge_pm):
    """Each machine locks its own mirror; the lease on the store refuses a second machine while it is fresh."""
    import time

    from genforge.core import RunBusy

    url = f"file://{tmp_path}/bucket/genforge"
    run = create_run("toy-gaussian", spec={"train": {"max_steps": 2}}, pm=genforge_pm(ToyPlugin()), root=url)
    monkeypatch.setenv("GENFORGE_MIRROR", str(tmp_path / "machine-b"))
    on_b = RunStore(url).get(run.id)
    assert on_b.path != run.path
    lease = tmp_path / "bucket" / "genforge" / "runs" / run.id / ".lease"
    with run.lock("train"):
        assert _newest(lease)["holder"].startswith("train by pid")
        with pytest.raises(RunBusy, match=rf"run {run.id} is busy on another machine: train by pid \d+ on .* lapses in \d+ s"):
            with on_b.lock("resume"):
                pass
    assert _newest(lease)["released"]  # released: the newest record says so
    with on_b.lock("resume"):  # free now
        pass
    # A machine that died leaves its lease behind; once it has lapsed, another machine takes over.
    _write_record(lease, "train by pid 1 on lost-host", time.time() - 1)
    with on_b.lock("resume"):
        assert _newest(lease)["holder"].startswith("resume by pid")
    _write_record(lease, "train by pid 1 on live-host", time.time() + 60)
    with pytest.raises(RunBusy, match="live-host"):
        with on_b.lock("resume"):
            pass
    assert len(list(lease.glob("g-*.json"))) <= 3  # old generations are pruned as the lease moves on


def test_a_held_lease_is_renewed(tmp_path, monkeypatch, genforge_pm):
    import time

    monkeypatch.setenv("GENFORGE_LEASE_SECONDS", "3")  # renewed every second
    url = f"file://{tmp_path}/bucket/genforge"
    run = create_run("toy-gaussian", spec={"train": {"max_steps": 2}}, pm=genforge_pm(ToyPlugin()), root=url)
    lease = tmp_path / "bucket" / "genforge" / "runs" / run.id / ".lease"
    with run.lock("train"):
        first = _newest(lease)
        time.sleep(1.3)
        renewed = _newest(lease)
        assert renewed["generation"] > first["generation"] and renewed["expires"] > first["expires"]
        assert renewed["token"] == first["token"]


def test_a_machine_whose_lease_was_taken_stops_its_run_and_pushes_nothing_more(tmp_path, monkeypatch, genforge_pm):
    """A holder that stalled past its lease finds another machine's record: training stops at the engine's next progress
    event (LeaseLost, a RunBusy), cooperatively, and nothing more is pushed to the store."""
    import time

    from genforge.core import LeaseLost, RunBusy, hookimpl

    monkeypatch.setenv("GENFORGE_LEASE_SECONDS", "3")  # renewed every second
    url = f"file://{tmp_path}/bucket/genforge"
    pm = genforge_pm(ToyPlugin())
    run = create_run("toy-gaussian", spec={"train": {"max_steps": 100000, "checkpoint_every": 50, "log_every": 5}}, pm=pm, root=url)
    remote = tmp_path / "bucket" / "genforge" / "runs" / run.id
    lease = remote / ".lease"
    taken = {}

    class TakeOver:  # another machine takes the run over while this one trains
        @hookimpl
        def genforge_train_progress(self, run, step, total, metrics):
            if not taken and step >= 20:
                time.sleep(1.2)  # a renewal passes first: the take-over below is the newest record
                _write_record(lease, "train by pid 9 on other-host", time.time() + 60)
                taken["at"] = step
                taken["pushed"] = sorted(p.name for p in (remote / "checkpoints").glob("*.pt"))

    pm.register(TakeOver(), name="take-over")
    with pytest.raises(LeaseLost, match=r"taken over by another machine \(train by pid 9 on other-host\)") as err:
        run_all(run, pm)
    assert isinstance(err.value, RunBusy)
    assert sorted(p.name for p in (remote / "checkpoints").glob("*.pt")) == taken["pushed"]  # fenced: no checkpoint after
    assert _newest(lease)["token"] == "theirs"  # theirs is left alone
    assert json.loads((run.path / "status.json").read_text())["step"] < 1000  # stopped within a second, not at the budget


def test_two_acquirers_started_together_exactly_one_holds_the_lease(tmp_path, monkeypatch):
    """50 rounds of two machines taking the same lease at once, with random delays injected around every store operation
    (reads, listings, the atomic create): exactly one holds it each time, the other is refused naming it."""
    import random
    import threading
    import time

    from genforge.core import RunBusy
    from genforge.core.store import lease as lease_module
    from genforge.core.store import mirror

    rng = random.Random(0)
    real_create, real_newest = mirror.create_if_absent, lease_module.Lease.newest

    def jitter():
        time.sleep(rng.random() * 0.01)

    def slow_create(fs, path, data):
        jitter()
        try:
            return real_create(fs, path, data)
        finally:
            jitter()

    def slow_newest(self):
        jitter()
        found = real_newest(self)
        jitter()
        return found

    monkeypatch.setattr(mirror, "create_if_absent", slow_create)
    monkeypatch.setattr(lease_module.Lease, "newest", slow_newest)
    for round_ in range(50):
        url = f"file://{tmp_path}/bucket/runs/run-{round_}"
        leases = [lease_module.Lease(f"run-{round_}", url, f"machine-{m}") for m in "ab"]
        outcome: dict[str, str] = {}
        start = threading.Barrier(2)

        def take(lease, start=start, outcome=outcome):
            start.wait()
            try:
                lease.acquire()
                outcome[lease.holder] = "held"
            except RunBusy as exc:
                outcome[lease.holder] = str(exc)

        threads = [threading.Thread(target=take, args=(lease,)) for lease in leases]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        held = [h for h, o in outcome.items() if o == "held"]
        assert len(held) == 1, (round_, outcome)
        other = next(o for h, o in outcome.items() if h not in held)
        assert f"busy on another machine: {held[0]}" in other
        for lease in leases:
            lease.release()


def test_a_reader_that_stalled_past_pruned_generations_does_not_take_the_lease(tmp_path):
    """Machine b reads generation 1 (a's, released), stalls; a takes the lease again and renews it until generation 1 and 2
    are pruned; b wakes and creates generation 2, which is absent by then. b must not hold the lease: a does."""
    from genforge.core import RunBusy
    from genforge.core.store.lease import Lease

    url = f"file://{tmp_path}/bucket/runs/r"
    a, b = Lease("r", url, "machine-a"), Lease("r", url, "machine-b")
    a.acquire()
    a.release()  # generation 2: released, so free
    stalled = b.newest()
    assert stalled[0] == 2 and stalled[1]["released"]
    a2 = Lease("r", url, "machine-a")
    a2.acquire()  # generation 3
    for _ in range(3):
        assert a2.renew()  # 4, 5, 6: 2, 3 and 4 are pruned
    assert 3 not in a2.generations()
    b.newest = lambda: stalled  # b acts on what it read before it stalled
    with pytest.raises(RunBusy):
        b.acquire()
    del b.newest
    assert b.generations()[-1] == 6 and 3 not in b.generations()  # b's stale record was withdrawn
    assert a2.renew() and a2.newest()[1]["token"] == a2.token
    a2.release()


def test_a_store_without_atomic_create_is_said_once(tmp_path, caplog):
    """fsspec's in-memory filesystem checks, then writes: the lease says so in one line rather than pretend."""
    from genforge.core.store.lease import Lease

    url = f"memory://bucket-{tmp_path.name}/runs/r"
    with caplog.at_level("WARNING", logger="genforge"):
        for holder in ("a", "b"):
            lease = Lease("r", url, holder)
            lease.acquire()
            lease.release()
    lines = [r.getMessage() for r in caplog.records if "atomic create-if-absent" in r.getMessage()]
    assert len(lines) == 1 and "memory://" in lines[0]


@pytest.mark.parametrize(
    ("umask", "file_mode", "folder_mode"),
    [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)],
    ids=["umask-022", "umask-077", "umask-002"],
)
def test_files_the_store_writes_follow_the_umask(tmp_path, genforge_pm, monkeypatch, umask, file_mode, folder_mode):
    """A team's shared store (umask 0o002 or 0o022) can read what genforge writes; a private umask keeps it private."""
    import os
    import stat

    import numpy as np

    from genforge.core.kinds import Images, Scenarios
    from genforge.core.store import atomic_write_text, prepared_once

    monkeypatch.setenv("GENFORGE_HOME", str(tmp_path / "store"))

    def prepare(folder):
        (folder / "stats.json").write_text("{}")
        return {}

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        prepared_once(tmp_path / "store" / "cache" / "x", prepare)
        run = create_run("toy-gaussian", spec={"train": {"max_steps": 2}}, pm=genforge_pm(ToyPlugin()))
        with Scenarios().stream(tmp_path / "scen") as write:  # the sample kinds' own writers
            write(np.zeros((2, 3, 1)))
        Images().write(np.zeros((2, 4, 4), np.uint8), tmp_path / "img")
    finally:
        os.umask(old)
    for written in (tmp_path / "scen" / "scenarios.parquet", tmp_path / "img" / "images.npz"):
        assert stat.S_IMODE(written.stat().st_mode) == file_mode, written.name
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "store" / "cache" / "x").stat().st_mode) == folder_mode
    for name in ("spec.yaml", "status.json", "versions.json"):
        assert stat.S_IMODE((run.path / name).stat().st_mode) == file_mode, name

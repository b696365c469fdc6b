"""The run store on shared storage: a URL root (fsspec), mirrored locally, resumable elsewhere."""

from __future__ import annotations

import json

import pytest

from genforge.core import RunStore, hookimpl
from genforge.core.runner import create_run, run_all
from genforge.testing.toy import ToyPlugin


class CrashAfterFirstCheckpoint:
    @hookimpl
    def genforge_checkpoint_saved(self, run, step, path):
        raise RuntimeError(f"worker lost after the checkpoint at step {step}")


def test_url_store_pushes_every_file_and_resumes_on_another_machine(tmp_path, monkeypatch, genforge_pm):
    shared = tmp_path / "bucket"
    url = f"file://{shared}/genforge"
    monkeypatch.setenv("GENFORGE_HOME", url)
    monkeypatch.setenv("GENFORGE_MIRROR", str(tmp_path / "machine-a"))
    pm = genforge_pm(ToyPlugin())
    run = create_run("toy-gaussian", spec={"train": {"max_steps": 12, "checkpoint_every": 5}}, pm=pm)
    assert run.remote == f"{url}/runs/{run.id}" and str(tmp_path / "machine-a") in str(run.path)
    crash = CrashAfterFirstCheckpoint()
    pm.register(crash, name="crash")
    try:
        with pytest.raises(RuntimeError, match="worker lost"):
            run_all(run, pm)
    finally:
        pm.unregister(crash)
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
    assert sorted(p.name for p in (remote_run / "checkpoints").iterdir()) == ["step-00000010.pt", "step-00000012.pt"]
    samples = json.loads((remote_run / "samples.json").read_text())
    assert (remote_run / samples["path"]).exists()  # recorded relative to the run folder
    assert not list(remote_run.rglob(".*"))  # no temp files or local markers on the shared store


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
    assert redact_url("memory://Foo/Bar#x") == "memory://Foo/Bar#x"  # nothing secret: as given
    assert redact_url("http://u:p@h:notaport/x?t=1") == "http://<redacted>@h:notaport/x?<redacted>"


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


def test_a_run_on_a_shared_store_is_leased_so_two_machines_never_train_it(tmp_path, monkeypatch, genforge_pm):
    """Each machine locks its own mirror; the lease on the store refuses a second machine while it is fresh."""
    import time

    from genforge.core import RunBusy

    url = f"file://{tmp_path}/bucket/genforge"
    run = create_run("toy-gaussian", spec={"train": {"max_steps": 2}}, pm=genforge_pm(ToyPlugin()), root=url)
    monkeypatch.setenv("GENFORGE_MIRROR", str(tmp_path / "machine-b"))
    on_b = RunStore(url).get(run.id)
    assert on_b.path != run.path
    lease = tmp_path / "bucket" / "genforge" / "runs" / run.id / ".lease.json"
    with run.lock("train"):
        assert json.loads(lease.read_text())["holder"].startswith("train by pid")
        with pytest.raises(RunBusy, match=rf"run {run.id} is busy on another machine: train by pid \d+ on .* lapses in \d+ s"):
            with on_b.lock("resume"):
                pass
    assert not lease.exists()  # released
    with on_b.lock("resume"):  # free now
        pass
    # A machine that died leaves its lease behind; once it has lapsed, another machine takes over.
    lease.write_text(json.dumps({"holder": "train by pid 1 on lost-host", "token": "x", "expires": time.time() - 1}))
    with on_b.lock("resume"):
        assert json.loads(lease.read_text())["holder"].startswith("resume by pid")
    lease.write_text(json.dumps({"holder": "train by pid 1 on live-host", "token": "x", "expires": time.time() + 60}))
    with pytest.raises(RunBusy, match="live-host"):
        with on_b.lock("resume"):
            pass


def test_a_held_lease_is_renewed(tmp_path, monkeypatch, genforge_pm):
    import time

    monkeypatch.setenv("GENFORGE_LEASE_SECONDS", "1.5")
    url = f"file://{tmp_path}/bucket/genforge"
    run = create_run("toy-gaussian", spec={"train": {"max_steps": 2}}, pm=genforge_pm(ToyPlugin()), root=url)
    lease = tmp_path / "bucket" / "genforge" / "runs" / run.id / ".lease.json"
    with run.lock("train"):
        first = json.loads(lease.read_text())["expires"]
        time.sleep(1.6)
        assert json.loads(lease.read_text())["expires"] > first


def test_a_machine_whose_lease_was_taken_stops_its_run(tmp_path, monkeypatch, genforge_pm):
    """A holder that stalled past its lease and finds another machine's token stops (LeaseLost, a RunBusy), instead of training on."""
    import time

    from genforge.core import RunBusy

    monkeypatch.setenv("GENFORGE_LEASE_SECONDS", "3")  # renewed every second
    url = f"file://{tmp_path}/bucket/genforge"
    run = create_run("toy-gaussian", spec={"train": {"max_steps": 2}}, pm=genforge_pm(ToyPlugin()), root=url)
    lease = tmp_path / "bucket" / "genforge" / "runs" / run.id / ".lease.json"
    import signal

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a worker's flow-run process: no Ctrl-C to borrow
    try:
        with pytest.raises(RunBusy, match=r"taken over by another machine \(train by pid 9 on other-host\)"):
            with run.lock("train"):
                lease.write_text(json.dumps({"holder": "train by pid 9 on other-host", "token": "theirs", "expires": time.time() + 60}))
                for _ in range(50):  # the renewal finds it taken within a second and interrupts this thread
                    time.sleep(0.1)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert json.loads(lease.read_text())["token"] == "theirs"  # theirs is left alone

"""Lease lifetime (SPEC §3.5): renewal, expiry of a killed consumer, release at exit and
on GC, unloading that waits for leases, and one clear error per failure."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import checkpoints
import loadstar
from conftest import Cluster, wait_until


@pytest.fixture(scope="module")
def tiny(cluster, tmp_path_factory):
    src = checkpoints.llama_fp16(str(tmp_path_factory.mktemp("tiny")))
    for name in ("tiny", "tiny-kill", "tiny-exit", "tiny-del", "tiny-other"):
        cluster.save(src, name)
    return src


def leases_of(client, name):
    return sum(i.leases for i in client.status(name).instances)


def consumer(cluster, name, ttl, then):
    """A Python subprocess that acquires `name`, maps it, prints the lease id, then `then`."""
    # torch is imported before the acquire: a long import holds the GIL and would starve
    # the renewal thread of a lease with a TTL this short.
    code = textwrap.dedent(f"""
        import sys, time, torch, loadstar
        lease = loadstar.Client({cluster.addr!r}).acquire({name!r}, ttl={ttl})
        sd = lease.state_dict()
        print(lease.id, flush=True)
        {then}
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=cluster.env())


def test_lease_renewed_past_its_ttl_stays_valid(client, tiny):
    client.deploy("tiny", min_instances=0, keep_alive=1)
    with client.acquire("tiny", ttl=2) as lease:
        assert lease.ttl == 2
        sd = lease.state_dict()
        snapshot = {k: v.clone() for k, v in sd.items()}
        time.sleep(5)  # 2.5 TTLs: alive only because the background thread renews it
        assert client.get_lease(lease.id).expires_unix_ms > time.time() * 1000
        assert lease.renew() > time.time() * 1000
        handle = client.get_instance(lease.instance.worker_address, lease.instance.instance_id)
        assert handle.instance_id == lease.instance.instance_id
        assert leases_of(client, "tiny") == 1
        assert all(torch.equal(sd[k], snapshot[k]) for k in sd)
    assert leases_of(client, "tiny") == 0


def test_killed_consumer_lease_expires_and_instance_unloads(cluster, client, tiny):
    client.deploy("tiny-kill", min_instances=0, keep_alive=1)
    proc = consumer(cluster, "tiny-kill", ttl=1, then="time.sleep(120)")
    try:
        lease_id = proc.stdout.readline().strip()
        assert lease_id, "the consumer did not acquire"
        assert leases_of(client, "tiny-kill") == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    # Nobody renews: the lease expires after its 1 s TTL, then keep_alive (1 s) unloads.
    wait_until(lambda: leases_of(client, "tiny-kill") == 0, 10, "the killed consumer's lease to expire")
    with pytest.raises(loadstar.NotFound):
        client.get_lease(lease_id)
    wait_until(lambda: len(client.status("tiny-kill").instances) == 0, 15,
               "the idle instance to be unloaded")


def test_consumer_exit_releases_its_lease(cluster, client, tiny):
    client.deploy("tiny-exit", min_instances=1)
    proc = consumer(cluster, "tiny-exit", ttl=60, then="sys.exit(0)")
    lease_id = proc.stdout.readline().strip()
    assert proc.wait(timeout=60) == 0
    # Released at interpreter exit, not left to its 60 s TTL.
    with pytest.raises(loadstar.NotFound):
        client.get_lease(lease_id)
    assert leases_of(client, "tiny-exit") == 0


def test_unload_while_leased_waits_for_release(cluster, client, tiny):
    client.deploy("tiny-del", min_instances=1)
    lease = client.acquire("tiny-del")
    addr, instance_id = lease.instance.worker_address, lease.instance.instance_id
    sd = lease.state_dict()
    snapshot = {k: v.clone() for k, v in sd.items()}
    client.delete("tiny-del")
    # Another model loads meanwhile: it must not get (and overwrite) the leased memory.
    client.deploy("tiny-other", min_instances=1, torch_dtype="float32")
    wait_until(lambda: any(i.state == "ready" for i in client.status("tiny-other").instances),
               30, "tiny-other to be ready")
    time.sleep(1)
    assert client.get_instance(addr, instance_id).instance_id == instance_id, \
        "the leased instance was unloaded"
    changed = [k for k in sd if not torch.equal(sd[k], snapshot[k])]
    assert not changed, f"leased tensors changed under the lease: {changed[:3]}"
    lease.release()

    def gone():
        try:
            client.get_instance(addr, instance_id)
            return False
        except loadstar.NotFound:
            return True
    wait_until(gone, 15, "the released instance of the deleted deployment to unload")


def test_renewal_failure_is_raised_by_the_next_use(client, tiny):
    lease = client.acquire("tiny", ttl=1)
    client.release(lease.id)  # behind the Lease's back: its next renewal fails
    time.sleep(1.0)
    with pytest.raises(loadstar.Error, match="could not be renewed"):
        lease.handle()
    with pytest.raises(loadstar.Error, match="could not be renewed"):
        lease.release()


def test_unknown_deployment_is_not_found(client):
    with pytest.raises(loadstar.NotFound, match="no-such-model"):
        client.acquire("no-such-model")
    with pytest.raises(loadstar.NotFound, match="no-such-model"):
        client.status("no-such-model")


def test_unreachable_controller_is_unavailable():
    with pytest.raises(loadstar.Unavailable, match="127.0.0.1:1"):
        loadstar.Client("127.0.0.1:1").status()


def test_invalid_config_names_the_key(client, tiny):
    with pytest.raises(loadstar.InvalidArgument, match="bnb_4bit_blocksize"):
        client.deploy("tiny", quantization_config={"load_in_4bit": True, "bnb_4bit_blocksize": 48})
    with pytest.raises(TypeError, match="unknown deployment field 'bogus'"):
        client.deploy("tiny", bogus=1)


def test_remote_worker_needs_copy(client, tiny):
    with client.acquire("tiny") as lease:
        local = lease.state_dict()
        remote = type(lease.instance)()
        remote.CopyFrom(lease.instance)
        remote.worker_address = "203.0.113.7:7071"  # TEST-NET-3: never this host
        real = lease.instance
        lease.instance = remote
        with pytest.raises(loadstar.NotMappable, match=r"203\.0\.113\.7:7071.*copy=True"):
            lease.state_dict()
        lease.instance = real
        copied = lease.state_dict(copy=True)
        assert all(torch.equal(copied[k], local[k]) for k in local)


def test_missing_shared_memory_needs_copy(client, tiny, monkeypatch):
    real = client.get_instance

    def without_shm(addr, instance_id):
        handle = real(addr, instance_id)
        for a in handle.allocations:
            a.shm_name = "/loadstar-gone-" + a.shm_name.lstrip("/")
        return handle
    monkeypatch.setattr(client, "get_instance", without_shm)
    with client.acquire("tiny") as lease:
        with pytest.raises(loadstar.NotMappable, match=r"/dev/shm/loadstar-gone-.*copy=True"):
            lease.state_dict()


def test_token_is_required_and_checked(tmp_path, tiny):
    secured = Cluster(str(tmp_path), token="s3cret-token")
    try:
        assert secured.client(token="s3cret-token").status() == []
        with pytest.raises(loadstar.Unauthenticated, match="UNAUTHENTICATED"):
            secured.client(token="wrong").status()
        with pytest.raises(loadstar.Unauthenticated):
            loadstar.Client(secured.addr).acquire("tiny")
        token_file = os.path.join(str(tmp_path), "token")
        assert secured.client(token_file=token_file).status() == []
    finally:
        secured.stop()

"""Operating a secure cluster (SPEC §7 Security, Operations): `loadstar up --tls-dir` with a
token serves the Python client over mTLS; the Prometheus endpoint is scraped with a real
HTTP client and parsed by prometheus_client's parser through a deploy -> acquire ->
release -> scale-to-zero cycle; the standard gRPC health stub sees each daemon go
SERVING only once it is ready."""
import os
import subprocess
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

import checkpoints
import loadstar
from conftest import Cluster, free_port, loadstar_bin, wait_until


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("secure")), token="s3cret", tls=True, metrics=True)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def tiny(secure, tmp_path_factory):
    src = checkpoints.llama_fp16(str(tmp_path_factory.mktemp("tiny")))
    secure.save(src, "tiny")
    return src


def scrape(cluster):
    """{(sample name, frozenset(labels)): value} of one scrape of the cluster's endpoint."""
    with urllib.request.urlopen(cluster.metrics_url, timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples, name, **labels):
    """The sum of `name`'s samples whose labels include `labels` (0 when there is none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def test_the_python_client_needs_the_certificate_and_the_token(secure):
    with secure.client() as client:
        assert [w.state for w in client.workers()] == ["alive"]
    with pytest.raises(loadstar.Unauthenticated):
        with secure.client(token="guess") as client:
            client.workers()
    # A CA alone is not enough: the cluster requires client certificates (mTLS).
    with pytest.raises(loadstar.Unavailable):
        with secure.client(tls={"ca": os.path.join(secure.tls_dir, "ca.pem")}) as client:
            client.workers()
    with pytest.raises(loadstar.Unavailable):
        with secure.client(tls=False) as client:
            client.workers()


def test_metrics_follow_a_deploy_acquire_release_scale_to_zero_cycle(secure, tiny):
    before = scrape(secure)
    assert value(before, "loadstar_workers", state="alive") == 1
    assert value(before, "loadstar_deployments") == 0
    assert value(before, "loadstar_cold_starts_total") == 0
    client = secure.client()
    client.deploy("tiny", min_instances=0, max_instances=1, keep_alive=1)
    lease = client.acquire("tiny")
    # The bytes the worker loaded; the device memory reserved for them (the worker's plan:
    # tensors plus alignment padding) covers them.
    loaded = lease.instance.bytes_total
    assert 0 < loaded <= lease.instance.device_bytes
    during = scrape(secure)
    assert value(during, "loadstar_deployments") == 1
    assert value(during, "loadstar_instances", state="ready") == 1
    assert value(during, "loadstar_leases") == 1
    assert value(during, "loadstar_cold_starts_total") == 1
    assert value(during, "loadstar_acquire_seconds_count", result="ok") == 1
    # The Acquire waited for the load, so it took at least as long as the load itself.
    load_sum = value(during, "loadstar_load_seconds_sum", tier="disk", quantization="none")
    assert 0 < load_sum <= value(during, "loadstar_acquire_seconds_sum", result="ok")
    assert value(during, "loadstar_loads_total", result="ok") == 1
    assert value(during, "loadstar_load_bytes_total", tier="disk", quantization="none") == loaded
    assert value(during, "loadstar_device_memory_bytes", kind="used") >= loaded
    assert value(during, "loadstar_device_memory_bytes", kind="total") > 0
    assert value(during, "loadstar_worker_instances", state="ready") == 1

    lease.release()
    assert value(scrape(secure), "loadstar_leases") == 0
    # keep_alive 1 s, min_instances 0: the idle instance goes and its memory with it.
    wait_until(lambda: value(scrape(secure), "loadstar_instances", state="ready") == 0, 30,
               "the idle instance to scale to zero")
    after = wait_until(
        lambda: (lambda s: s if value(s, "loadstar_device_memory_bytes", kind="used") == 0
                 else None)(scrape(secure)), 30, "the worker to free the device memory")
    assert value(after, "loadstar_worker_instances", state="ready") == 0
    # Counters only grow: one cold start, one load, whatever came after.
    assert value(after, "loadstar_cold_starts_total") == 1
    assert value(after, "loadstar_loads_total", result="ok") == 1
    assert value(after, "loadstar_state_write_failures_total") == 0

    # A second Acquire cold-starts again.
    with client.acquire("tiny"):
        pass
    assert value(scrape(secure), "loadstar_cold_starts_total") == 2
    client.delete("tiny")
    client.close()


def health(address, **channel):
    creds = channel.get("credentials")
    ch = grpc.secure_channel(address, creds) if creds else grpc.insecure_channel(address)
    try:
        stub = health_pb2_grpc.HealthStub(ch)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
    finally:
        ch.close()


def test_the_secure_cluster_answers_health_checks_without_a_token(secure):
    tls = os.path.join(secure.tls_dir, "{}")
    read = lambda name: open(tls.format(name), "rb").read()
    creds = grpc.ssl_channel_credentials(read("ca.pem"), read("client-key.pem"),
                                         read("client.pem"))
    assert health(secure.addr, credentials=creds) == health_pb2.HealthCheckResponse.SERVING


def test_a_worker_is_serving_only_once_it_has_registered(tmp_path):
    controller_addr = f"127.0.0.1:{free_port()}"
    worker_addr = f"127.0.0.1:{free_port()}"
    store = tmp_path / "store"
    store.mkdir()
    log = open(tmp_path / "daemons.log", "wb")
    worker = subprocess.Popen(
        [loadstar_bin(), "worker", "--controller", controller_addr, "--addr", worker_addr,
         "--store", str(store), "--devices", "host:1", "--device-memory", "64MiB"],
        stdout=log, stderr=subprocess.STDOUT)
    controller = None
    try:
        # Listening, but no controller to register with yet.
        wait_until(lambda: _status_or_none(worker_addr) is not None, 30, "the worker to listen")
        assert health(worker_addr) == health_pb2.HealthCheckResponse.NOT_SERVING
        controller = subprocess.Popen(
            [loadstar_bin(), "controller", "--addr", controller_addr, "--heartbeat-interval",
             "0.2", "--heartbeat-timeout", "5"], stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: _status_or_none(controller_addr) == health_pb2.HealthCheckResponse.SERVING,
                   30, "the controller to serve")
        wait_until(lambda: health(worker_addr) == health_pb2.HealthCheckResponse.SERVING, 30,
                   "the worker to register and serve")
        # The controller goes away: the worker no longer reports ready.
        controller.kill()
        controller.wait()
        wait_until(lambda: health(worker_addr) == health_pb2.HealthCheckResponse.NOT_SERVING,
                   30, "the worker to notice the controller is gone")
    finally:
        for p in (worker, controller):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        log.close()


def _status_or_none(address):
    try:
        return health(address)
    except grpc.RpcError:
        return None


def _start_etcd(tmp_path):
    """A one-member etcd on loopback (Debian's etcd-server); None when not installed."""
    if not os.access("/usr/bin/etcd", os.X_OK):
        return None, None
    client, peer = free_port(), free_port()
    proc = subprocess.Popen(
        ["/usr/bin/etcd", "--name", "t", "--data-dir", str(tmp_path / "etcd"),
         "--listen-client-urls", f"http://127.0.0.1:{client}",
         "--advertise-client-urls", f"http://127.0.0.1:{client}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"t=http://127.0.0.1:{peer}", "--log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def healthy():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{client}/health", timeout=1) as r:
                return b'"true"' in r.read()
        except OSError:
            return False
    wait_until(healthy, 20, "etcd to start")
    return proc, f"127.0.0.1:{client}"


def test_the_python_client_follows_a_new_leader(tmp_path):
    etcd, endpoint = _start_etcd(tmp_path)
    if etcd is None:
        pytest.skip("etcd-server is not installed (/usr/bin/etcd)")
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    store = tmp_path / "store"
    store.mkdir()
    log = open(tmp_path / "daemons.log", "wb")
    procs = [subprocess.Popen(
        [loadstar_bin(), "controller", "--addr", a, "--state", f"etcd://{endpoint}/py",
         "--election-ttl", "2", "--heartbeat-interval", "0.2", "--heartbeat-timeout", "5"],
        stdout=log, stderr=subprocess.STDOUT) for a in addrs]
    procs.append(subprocess.Popen(
        [loadstar_bin(), "worker", "--controller", ",".join(addrs), "--store", str(store),
         "--devices", "host:1", "--device-memory", "256MiB"], stdout=log, stderr=subprocess.STDOUT))
    try:
        src = checkpoints.llama_fp16(str(tmp_path / "tiny"))
        env = dict(os.environ, LOADSTAR_STORE=str(store))
        subprocess.run([loadstar_bin(), "store", "save", src, "--name", "tiny"], check=True,
                       env=env, capture_output=True)
        client = loadstar.Client(",".join(addrs))
        # Until the first election is over both controllers answer "no leader yet".
        wait_until(lambda: _try(lambda: any(m.name == "tiny" for w in client.workers()
                                            for m in w.info.models)),
                   30, "a leader, and the worker to register with it and report its model")
        client.deploy("tiny")
        lease = client.acquire("tiny", ttl=60)
        leader = next(i for i, a in enumerate(addrs)
                      if health(a) == health_pb2.HealthCheckResponse.SERVING)
        procs[leader].kill()
        procs[leader].wait()
        # The same client object, unchanged, renews through the new leader.
        renewed = wait_until(lambda: _try(lambda: client.renew(lease.id)), 15,
                             "a renewal through the new leader")
        assert renewed.lease_id == lease.id
        assert client.controller.target == f"controller {addrs[1 - leader]}"
        lease.release()
        client.close()
    finally:
        for p in procs + [etcd]:
            if p.poll() is None:
                p.kill()
                p.wait()
        log.close()


def _try(call):
    try:
        return call()
    except loadstar.Error:
        return None


def test_server_reflection_lists_the_services_to_a_client_with_the_token(secure):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase)
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    tls = os.path.join(secure.tls_dir, "{}")
    read = lambda name: open(tls.format(name), "rb").read()
    creds = grpc.ssl_channel_credentials(read("ca.pem"), read("client-key.pem"),
                                         read("client.pem"))
    token = grpc.metadata_call_credentials(
        lambda _ctx, cb: cb((("authorization", "Bearer s3cret"),), None))
    with grpc.secure_channel(secure.addr, grpc.composite_channel_credentials(creds, token)) as ch:
        services = set(ProtoReflectionDescriptorDatabase(ch).get_services())
        assert {"loadstar.v1.Controller", "grpc.health.v1.Health"} <= services
        # The full descriptor of a method comes back, as grpcurl would use it.
        db = ProtoReflectionDescriptorDatabase(ch)
        assert db.FindFileContainingSymbol("loadstar.v1.Controller").name.endswith(
            "controller.proto")
    # Without the token, reflection is refused like every other RPC.
    with grpc.secure_channel(secure.addr, creds) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
                list_services="")]), timeout=5))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED

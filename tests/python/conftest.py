"""Shared fixtures of the Python attach tests: a real `loadstar up` cluster per test module.

Each module gets its own cluster (controller + worker(s) with emulated host devices) on a
free loopback port with a temporary store, started with the loadstar binary of this build
($LOADSTAR_BIN, else <build>/deploy/loadstar) and stopped when the module ends. Models are
real HF checkpoints written by transformers' save_pretrained (random weights, tiny).
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def loadstar_bin():
    path = os.environ.get("LOADSTAR_BIN")
    if not path:
        build = os.environ.get("LOADSTAR_BINARY_DIR") or os.path.join(REPO, "build")
        path = os.path.join(build, "deploy", "loadstar")
    if not os.access(path, os.X_OK):
        pytest.fail(f"loadstar binary not found at {path} (set LOADSTAR_BIN)")
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A running `loadstar up` and helpers to drive it (CLI and Python client)."""

    def __init__(self, root, workers=1, token=None, lease_ttl=None, tls=False, metrics=False,
                 extra=()):
        self.root = root
        self.store = os.path.join(root, "store")
        self.addr = f"127.0.0.1:{free_port()}"
        self.bin = loadstar_bin()
        self.token_file = None
        self.tls_dir = os.path.join(root, "tls") if tls else None
        self.metrics_url = None
        os.makedirs(self.store, exist_ok=True)
        # A generous heartbeat timeout: on a box where ctest runs other suites alongside,
        # a starved heartbeat must not mark the worker lost in the middle of a test.
        # Device memory is pooled (populated at start, and ctest runs modules in
        # parallel): 1 GiB per device holds every model these tests load at once.
        args = [self.bin, "up", "--workers", str(workers), "--devices", "host:2",
                "--device-memory", "1GiB", "--store", self.store, "--addr", self.addr,
                "--heartbeat-timeout", "30"]
        if token:
            self.token_file = os.path.join(root, "token")
            with open(self.token_file, "w") as f:
                f.write(token + "\n")
            args += ["--token-file", self.token_file]
        if lease_ttl:
            args += ["--lease-ttl", str(lease_ttl)]
        if self.tls_dir:
            args += ["--tls-dir", self.tls_dir]
        if metrics:
            args += ["--metrics-address", "127.0.0.1:0"]
        args += list(extra)
        self.log = open(os.path.join(root, "cluster.log"), "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=self.env())
        if metrics:
            self.metrics_url = wait_until(lambda: self._announced("metrics on "), 30,
                                          "the metrics endpoint to be announced")
        self._wait_ready(workers)

    def _announced(self, prefix):
        for line in self.log_text().splitlines():
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        return None

    def env(self):
        env = dict(os.environ, LOADSTAR_ADDR=self.addr, LOADSTAR_STORE=self.store)
        if self.token_file:
            env["LOADSTAR_TOKEN_FILE"] = self.token_file
        if self.tls_dir:
            env["LOADSTAR_TLS_DIR"] = self.tls_dir
        return env

    def _wait_ready(self, workers):
        import loadstar

        client = self.client()
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"loadstar up exited ({self.proc.returncode}): {self.log_text()}")
            try:
                alive = [w for w in client.workers() if w.state == "alive"]
                if len(alive) >= workers:
                    return
            except loadstar.Unavailable:
                pass
            time.sleep(0.1)
        pytest.fail(f"the cluster at {self.addr} did not come up: {self.log_text()}")

    def log_text(self):
        self.log.flush()
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def client(self, **kwargs):
        import loadstar

        if self.token_file and "token" not in kwargs and "token_file" not in kwargs:
            kwargs["token_file"] = self.token_file
        if self.tls_dir and "tls" not in kwargs:
            kwargs["tls"] = self.tls_dir
        return loadstar.Client(self.addr, **kwargs)

    def cli(self, *args, check=True):
        """Runs `loadstar ARGS` against this cluster; returns stdout (parsed if -o json)."""
        r = subprocess.run([self.bin, *args], capture_output=True, text=True, env=self.env(),
                           timeout=300)
        if check and r.returncode != 0:
            raise AssertionError(f"loadstar {' '.join(args)} failed ({r.returncode}): "
                                 f"{r.stderr.strip()}")
        if "-o" in args and "json" in args and r.returncode == 0:
            return json.loads(r.stdout)
        return r

    def save(self, src, name, *flags):
        """Stores `src` as `name` and waits until a worker reports it (workers send their
        store inventory with each heartbeat)."""
        self.cli("store", "save", src, "--name", name, *flags)
        client = self.client()
        wait_until(lambda: any(m.name == name for w in client.workers() for m in w.info.models),
                   10, f"a worker to report stored model {name}")
        client.close()

    def export(self, name, quantization, out, blocksize=None):
        args = ["store", "export", name, "--quantization", quantization, "--out", out]
        if blocksize:
            args += ["--blocksize", str(blocksize)]
        self.cli(*args)
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("cluster")))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def client(cluster):
    c = cluster.client()
    yield c
    c.close()


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    # Kept-file downloads (Lease.files_dir) land in a temporary cache, not ~/.cache.
    os.environ["LOADSTAR_CACHE_DIR"] = str(tmp_path_factory.mktemp("loadstar-cache"))


def wait_until(predicate, timeout, what):
    """Polls `predicate` until it returns a true value; fails naming `what`."""
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


PYTHON = sys.executable

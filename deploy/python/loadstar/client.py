"""Client: the controller's and workers' gRPC services behind plain Python calls.

One channel to the controller (deployments and leases) and one per worker address met in
a lease (instance handles, tensor and file streams), all with the same credentials: the
bearer token as `authorization` metadata on every call (the daemons check it in one place)
and TLS when asked. Every gRPC failure surfaces as a `loadstar.Error` subclass naming the
call, the daemon and the cause.
"""
import os
import threading

import grpc

from . import config as _config
from . import errors
from .lease import Lease
from .v1 import controller_pb2, controller_pb2_grpc, worker_pb2, worker_pb2_grpc

DEFAULT_ADDR = "127.0.0.1:7070"
# Unary control calls answer in milliseconds; this only bounds a daemon that hangs.
# Acquire has none: a cold start legitimately takes as long as the load (the controller
# bounds the wait itself).
CONTROL_TIMEOUT_S = 60.0
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 256 << 20)]


def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise errors.Error(f"cannot read the {what} {path}: {e.strerror}") from None


def _tls_credentials(tls):
    """grpc.ChannelCredentials for `tls`: True (system roots), or a dict / object with
    `ca`, `cert`, `key` PEM file paths (cert and key together, for mTLS)."""
    if tls is True:
        return grpc.ssl_channel_credentials()
    get = tls.get if isinstance(tls, dict) else (lambda k: getattr(tls, k, None))
    if isinstance(tls, dict):
        unknown = set(tls) - {"ca", "cert", "key"}
        if unknown:
            raise ValueError(f"unknown tls keys {sorted(unknown)}; expected ca, cert, key")
    ca, cert, key = get("ca"), get("cert"), get("key")
    if (cert is None) != (key is None):
        raise ValueError("tls: cert and key go together (client certificate for mTLS)")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "TLS CA certificate") if ca else None,
        private_key=_read(key, "TLS private key") if key else None,
        certificate_chain=_read(cert, "TLS certificate") if cert else None)


def _tls_dir_files(directory):
    """The client files of a `loadstar up --tls-dir` directory (daemon/tls.h names them)."""
    return {"ca": os.path.join(directory, "ca.pem"),
            "cert": os.path.join(directory, "client.pem"),
            "key": os.path.join(directory, "client-key.pem")}


def _tls_from_environment():
    directory = os.environ.get("LOADSTAR_TLS_DIR")
    files = _tls_dir_files(directory) if directory else {}
    for key in ("ca", "cert", "key"):
        value = os.environ.get(f"LOADSTAR_TLS_{key.upper()}")
        if value:
            files[key] = value
    return files or None


def _token(token, token_file):
    if token is not None and token_file is not None:
        raise ValueError("pass token or token_file, not both")
    if token is None:
        token_file = token_file or os.environ.get("LOADSTAR_TOKEN_FILE") or None
        if token_file:
            token = _read(token_file, "token file").decode().strip()
            if not token:
                raise errors.Error(f"the token file {token_file} is empty")
    return token or None


_LEADER_IS_AT = "the leader is at "  # a follower controller's answer (daemon/rpc_util.h)


class _Service:
    """One daemon's stub with the client's metadata; turns RpcErrors into loadstar Errors."""

    def __init__(self, stub, target, metadata):
        self._stub = stub
        self.target = target
        self._metadata = metadata

    def call(self, method, request, what, timeout=CONTROL_TIMEOUT_S):
        try:
            return getattr(self._stub, method)(request, metadata=self._metadata, timeout=timeout)
        except grpc.RpcError as e:
            raise errors.from_rpc(e, what, self.target) from None


class _Controllers(_Service):
    """The controller service over one or more addresses (HA under etcd): a call answered
    UNAVAILABLE is sent again to the leader the answer names, or to the next address, so
    a client (and a lease's renewal thread) follows a change of leader."""

    def __init__(self, addresses, open_channel, metadata):
        self._addresses = list(addresses)
        self._open = open_channel
        self._index = 0
        self._lock = threading.Lock()
        super().__init__(self._stub_for(self._addresses[0]), f"controller {self._addresses[0]}",
                         metadata)

    def _stub_for(self, address):
        return controller_pb2_grpc.ControllerStub(self._open(address))

    def _switch(self, err):
        """Points at the controller to try next; False when there is none."""
        if not isinstance(err, grpc.RpcError) or err.code() != grpc.StatusCode.UNAVAILABLE:
            return False
        details = err.details() or ""
        with self._lock:
            at = details.rfind(_LEADER_IS_AT)
            if at >= 0:
                leader = details[at + len(_LEADER_IS_AT):].strip()
                if leader not in self._addresses:
                    self._addresses.append(leader)
                self._index = self._addresses.index(leader)
            elif len(self._addresses) > 1:
                self._index = (self._index + 1) % len(self._addresses)
            else:
                return False
            address = self._addresses[self._index]
            self._stub = self._stub_for(address)
            self.target = f"controller {address}"
            return True

    def call(self, method, request, what, timeout=CONTROL_TIMEOUT_S):
        for _ in range(2 * len(self._addresses) + 1):
            try:
                return getattr(self._stub, method)(request, metadata=self._metadata,
                                                   timeout=timeout)
            except grpc.RpcError as e:
                if not self._switch(e):
                    raise errors.from_rpc(e, what, self.target) from None
                last = e
        raise errors.from_rpc(last, what, self.target) from None

    def stream(self, method, request, what):
        """Yields the messages of a server stream; a failure mid-stream raises too."""
        try:
            for message in getattr(self._stub, method)(request, metadata=self._metadata):
                yield message
        except grpc.RpcError as e:
            raise errors.from_rpc(e, what, self.target) from None


class Client:
    """A connection to a loadstar cluster.

    addr: the controller, HOST:PORT, or several comma-separated (HA: the client follows
    the leader) (default $LOADSTAR_ADDR, else 127.0.0.1:7070).
    token / token_file: the bearer token, or a file holding it (default
    $LOADSTAR_TOKEN_FILE); none sends no token.
    tls: True (TLS with the system's roots), {ca, cert, key} paths (a dict or an object
    with those attributes), a directory written by `loadstar up --tls-dir` (its CA and
    client certificate), or False (plaintext). None (the default) reads the environment
    as the CLI does: $LOADSTAR_TLS_CA / _CERT / _KEY, else $LOADSTAR_TLS_DIR; plaintext
    when none is set.
    """

    def __init__(self, addr=None, token=None, token_file=None, tls=None):
        self.addr = addr or os.environ.get("LOADSTAR_ADDR") or DEFAULT_ADDR
        token = _token(token, token_file)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        if tls is None:
            tls = _tls_from_environment()
        elif isinstance(tls, (str, os.PathLike)):
            tls = _tls_dir_files(os.fspath(tls))
        self._credentials = _tls_credentials(tls) if tls not in (None, False) else None
        self._lock = threading.Lock()
        self._channels = []
        addresses = [a.strip() for a in self.addr.split(",") if a.strip()]
        if not addresses:
            raise ValueError(f"addr {self.addr!r} names no controller (HOST:PORT[,HOST:PORT...])")
        self.controller = _Controllers(addresses, self._channel, self._metadata)
        self._workers = {}

    def _channel(self, addr):
        if self._credentials is not None:
            channel = grpc.secure_channel(addr, self._credentials, options=_CHANNEL_OPTIONS)
        else:
            channel = grpc.insecure_channel(addr, options=_CHANNEL_OPTIONS)
        self._channels.append(channel)
        return channel

    def worker(self, address):
        """The Worker service at `address` (one channel per address, reused)."""
        with self._lock:
            service = self._workers.get(address)
            if service is None:
                service = _Service(worker_pb2_grpc.WorkerStub(self._channel(address)),
                                   f"worker {address}", self._metadata)
                self._workers[address] = service
            return service

    def close(self):
        """Closes every channel; leases acquired through this client stop renewing."""
        with self._lock:
            channels, self._channels = self._channels, []
        for channel in channels:
            channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Deployments.

    def deploy(self, model=None, *, config_yaml=None, replace=False, **fields):
        """Creates a deployment; returns the Deployment message.

        Either `model` (the store name; the deployment's name too unless name= is given)
        with the config's fields as keywords (see loadstar.config: name, num_gpus,
        torch_dtype, quantization, quantization_config (a BitsAndBytesConfig or dict),
        device_map, min_instances, max_instances, keep_alive, target, backend_config,
        auto_scaling_config, ...), or the whole SPEC §3.2 YAML as `config_yaml`.
        A deployment of that name with another config is AlreadyExists unless `replace`,
        which rolls it to the new config (new instances load before old ones go).
        """
        if config_yaml is not None:
            if model is not None or fields:
                raise ValueError("pass config_yaml alone, or model with keyword fields")
            text = config_yaml
            what = "Deploy(config_yaml)"
        else:
            text = _config.to_yaml(_config.deployment_config(model, fields))
            what = f"Deploy({model!r})"
        response = self.controller.call(
            "Deploy", controller_pb2.DeployRequest(config_yaml=text, replace=bool(replace)), what)
        return response.deployment

    def status(self, name=None):
        """The Deployment message of `name`, or the list of all deployments."""
        if name is not None:
            return self.controller.call("GetDeployment", controller_pb2.NameRequest(name=name),
                                        f"GetDeployment({name!r})")
        return list(self.controller.call("ListDeployments",
                                         controller_pb2.ListDeploymentsRequest(),
                                         "ListDeployments").deployments)

    def delete(self, name):
        """Deletes a deployment; its instances unload once their leases end."""
        self.controller.call("Delete", controller_pb2.NameRequest(name=name), f"Delete({name!r})")

    def workers(self):
        """The WorkerStatus messages of the registered workers."""
        return list(self.controller.call("ListWorkers", controller_pb2.ListWorkersRequest(),
                                         "ListWorkers").workers)

    # Leases.

    def acquire(self, name, ttl=None):
        """A Lease on a ready instance of deployment `name` (cold-starting one if needed).

        ttl: seconds the lease lives without renewal (default: the controller's). The Lease
        renews itself every ttl/3 until released (see loadstar.lease).
        """
        if ttl is not None and not ttl > 0:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl!r}")
        proto = self.controller.call(
            "Acquire", controller_pb2.AcquireRequest(deployment=name, ttl_seconds=ttl or 0),
            f"Acquire({name!r})", timeout=None)
        return Lease(self, proto)

    def renew(self, lease_id):
        """Renews a lease by id; returns the Lease message (new expiry)."""
        return self.controller.call("RenewLease", controller_pb2.LeaseRequest(lease_id=lease_id),
                                    f"RenewLease({lease_id!r})")

    def get_lease(self, lease_id):
        """The Lease message of a live lease, as it stands (not renewed); NotFound once it
        was released or expired."""
        return self.controller.call("GetLease", controller_pb2.LeaseRequest(lease_id=lease_id),
                                    f"GetLease({lease_id!r})")

    def release(self, lease_id):
        """Releases a lease by id (a Lease object's own release() also stops its renewal)."""
        if isinstance(lease_id, Lease):
            lease_id.release()
            return
        self.controller.call("Release", controller_pb2.LeaseRequest(lease_id=lease_id),
                             f"Release({lease_id!r})")

    # Worker calls used by Lease.

    def get_instance(self, worker_address, instance_id):
        return self.worker(worker_address).call(
            "GetInstance", worker_pb2.InstanceRequest(instance_id=instance_id),
            f"GetInstance({instance_id!r})")

    def read_tensor(self, worker_address, instance_id, tensor, offset=0, length=0):
        """Yields the TensorChunk messages of one tensor's bytes."""
        request = worker_pb2.ReadTensorRequest(instance_id=instance_id, tensor=tensor,
                                               offset=offset, length=length)
        return self.worker(worker_address).stream("ReadTensor", request,
                                                  f"ReadTensor({instance_id!r}, {tensor!r})")

    def read_model_file(self, worker_address, model, name):
        """Yields the TensorChunk messages of one kept file of a stored model."""
        request = worker_pb2.ReadModelFileRequest(model=model, name=name)
        return self.worker(worker_address).stream("ReadModelFile", request,
                                                  f"ReadModelFile({model!r}, {name!r})")

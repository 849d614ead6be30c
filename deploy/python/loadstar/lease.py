"""Lease: a consumer's claim on one ready instance, kept alive while the consumer lives.

The controller never unloads, frees or reuses an instance's memory while a lease on it is
live (SPEC §3.5), so everything mapped from an instance must be used under a live lease.
A Lease therefore renews itself from a daemon thread every ttl/3 until it is released:
explicitly (`release()`, leaving a `with` block), when it is garbage collected, or at
interpreter exit (weakref.finalize runs at exit too). A consumer killed outright stops
renewing and the lease expires after its TTL, which is how the cluster reclaims it.

Tensors mapped from the instance keep their Lease alive (the mapping holds it), so a
model built on them keeps its lease for as long as the model lives, and dropping the
model (and the lease object) releases it.

The renewal thread needs the GIL: choose a TTL well above the longest stretch this
process may hold it (a large import or a long C call that does not release it), or the
lease can expire while the process is alive.

A failed renewal is remembered and raised by the next use of the lease (handle(),
state_dict(), files_dir(), renew(), release()): the memory can no longer be trusted
once the lease may have expired.
"""
import threading
import time
import warnings
import weakref

from . import errors

# Transient failures a renewal retries while the lease still has time left.
_TRANSIENT = (errors.Unavailable, errors.DeadlineExceeded)


class _Keeper:
    """Renewal and release of one lease. The renewal thread and the finalizer hold this,
    never the Lease, so that the Lease can be garbage collected."""

    def __init__(self, client, lease_id, ttl_seconds, expires_unix_ms):
        self.client = client
        self.lease_id = lease_id
        self.ttl = ttl_seconds
        self.expires_unix_ms = expires_unix_ms
        self.error = None
        self.released = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._renew_loop, daemon=True,
                                        name=f"loadstar-lease-{lease_id}")

    def start(self):
        self._thread.start()

    def renew_now(self):
        proto = self.client.renew(self.lease_id)
        self.expires_unix_ms = proto.expires_unix_ms
        return proto

    def _renew_loop(self):
        period = self.ttl / 3
        delay = period
        while not self._stop.wait(delay):
            try:
                self.renew_now()
                delay = period
            except Exception as e:  # noqa: BLE001 - any failure ends the lease's validity
                left_s = self.expires_unix_ms / 1000 - time.time()
                if isinstance(e, _TRANSIENT) and left_s > 0:
                    delay = min(period, max(left_s / 4, 0.05))  # retry before it expires
                    continue
                if not self._stop.is_set():
                    self.error = errors.Error(
                        f"lease {self.lease_id} could not be renewed, so its instance may be "
                        f"unloaded: {e}", code=getattr(e, "code", None))
                return

    def release(self):
        """Stops renewing and releases the lease once; raises a remembered renewal error."""
        with self._lock:
            if self.released:
                return
            self.released = True
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        try:
            self.client.release(self.lease_id)
        except errors.Error:
            if self.error is None:
                raise
        if self.error is not None:
            raise self.error

    def release_quietly(self):
        """Release from a finalizer (GC or interpreter exit): a failure is only a warning."""
        try:
            self.release()
        except Exception as e:  # noqa: BLE001 - finalizers must not raise
            warnings.warn(f"loadstar: releasing lease {self.lease_id} failed: {e}",
                          RuntimeWarning, stacklevel=1)


class Lease:
    """A lease on a ready instance (from Client.acquire). A context manager.

    Attributes: id, deployment, instance (the Instance message: instance_id, worker_id,
    worker_address, ...), ttl (seconds), cold_start (this acquire started the instance).
    """

    def __init__(self, client, proto):
        self.client = client
        self.id = proto.lease_id
        self.deployment = proto.deployment
        self.instance = proto.instance
        self.ttl = proto.ttl_seconds
        self.cold_start = proto.cold_start
        if not self.ttl > 0:
            raise errors.Error(f"lease {self.id}: the controller gave ttl {self.ttl!r}")
        self._keeper = _Keeper(client, self.id, self.ttl, proto.expires_unix_ms)
        self._finalizer = weakref.finalize(self, self._keeper.release_quietly)
        self._lock = threading.Lock()
        self._handle = None
        self._files_dir = None
        self._regions = weakref.WeakValueDictionary()  # read-only mappings by device index
        self._keeper.start()

    def __repr__(self):
        state = "released" if self.released else "live"
        return (f"<loadstar.Lease {self.id} on {self.instance.instance_id} "
                f"({self.deployment}) at {self.instance.worker_address}, {state}>")

    @property
    def released(self):
        return self._keeper.released

    @property
    def expires_unix_ms(self):
        return self._keeper.expires_unix_ms

    def check(self):
        """Raises if the lease was released or its renewal failed."""
        if self._keeper.error is not None:
            raise self._keeper.error
        if self._keeper.released:
            raise errors.Error(f"lease {self.id} was released")

    def renew(self):
        """Renews now (the background thread does it anyway); returns the new expiry (unix ms)."""
        self.check()
        return self._keeper.renew_now().expires_unix_ms

    def release(self):
        """Stops renewing and releases the lease (idempotent). Tensors mapped from the
        instance must not be used afterwards: the instance may be unloaded."""
        self._finalizer.detach()
        self._keeper.release()

    def __enter__(self):
        self.check()
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self.release()
        except errors.Error:
            if exc_type is None:
                raise

    def handle(self):
        """The instance's InstanceHandle (GetInstance on its worker), fetched once."""
        self.check()
        with self._lock:
            if self._handle is None:
                self._handle = self.client.get_instance(self.instance.worker_address,
                                                        self.instance.instance_id)
            return self._handle

    def state_dict(self, writable=False, copy=False):
        """{tensor name: torch.Tensor} of the instance (see loadstar.tensors.state_dict)."""
        from . import tensors

        return tensors.state_dict(self, writable=writable, copy=copy)

    def files_dir(self):
        """A local directory holding the model's kept files (config.json, tokenizer, ...),
        downloaded once (see loadstar.files)."""
        from . import files

        handle = self.handle()
        with self._lock:
            if self._files_dir is None:
                self._files_dir = files.download(self.client, self.instance.worker_address,
                                                 handle)
            return self._files_dir

    def region(self, device, open_region):
        """The read-only mapping of device `device`'s allocation, shared by every
        state_dict() of this lease while any of its tensors lives; `open_region()` makes it."""
        with self._lock:
            region = self._regions.get(device)
            if region is None:
                region = open_region()
                self._regions[device] = region
            return region

"""Errors of the loadstar client: one exception class per cause.

Every gRPC failure becomes a subclass of `Error` named after its canonical status code
(SPEC §3.3), so callers catch `loadstar.NotFound` rather than inspect grpc.RpcError, and
the message says which call failed, against which daemon, and why (the daemon's own
message). Failures found on this side (an instance that cannot be mapped here, a lease
whose renewal failed) are `Error`s too.
"""
import grpc


class Error(Exception):
    """A loadstar operation failed. `code` is the gRPC status code name, if any."""

    code = None

    def __init__(self, message, *, code=None):
        super().__init__(message)
        if code is not None:
            self.code = code


class Cancelled(Error):
    code = "CANCELLED"


class Unknown(Error):
    code = "UNKNOWN"


class InvalidArgument(Error):
    """Bad config or request (the message names the key path)."""
    code = "INVALID_ARGUMENT"


class DeadlineExceeded(Error):
    code = "DEADLINE_EXCEEDED"


class NotFound(Error):
    """Unknown deployment, model, lease, instance or tensor."""
    code = "NOT_FOUND"


class AlreadyExists(Error):
    code = "ALREADY_EXISTS"


class PermissionDenied(Error):
    code = "PERMISSION_DENIED"


class ResourceExhausted(Error):
    """The model does not fit anywhere."""
    code = "RESOURCE_EXHAUSTED"


class FailedPrecondition(Error):
    """The request is infeasible in the cluster's current state."""
    code = "FAILED_PRECONDITION"


class Aborted(Error):
    code = "ABORTED"


class OutOfRange(Error):
    code = "OUT_OF_RANGE"


class Unimplemented(Error):
    code = "UNIMPLEMENTED"


class Internal(Error):
    code = "INTERNAL"


class Unavailable(Error):
    """No daemon answered at the address, or no worker can serve."""
    code = "UNAVAILABLE"


class DataLoss(Error):
    """Stored bytes failed their checksum."""
    code = "DATA_LOSS"


class Unauthenticated(Error):
    """Missing or wrong bearer token."""
    code = "UNAUTHENTICATED"


class NotMappable(Error):
    """The instance's memory cannot be mapped into this process (another host, or its
    shared-memory object is gone); `copy=True` streams the tensors instead."""


_BY_CODE = {cls.code: cls for cls in (
    Cancelled, Unknown, InvalidArgument, DeadlineExceeded, NotFound, AlreadyExists,
    PermissionDenied, ResourceExhausted, FailedPrecondition, Aborted, OutOfRange,
    Unimplemented, Internal, Unavailable, DataLoss, Unauthenticated)}


def from_rpc(err, what, target):
    """The Error for a failed gRPC call `what` (e.g. "Acquire('opt-125m')") sent to
    `target` (e.g. "controller 127.0.0.1:7070")."""
    if not isinstance(err, grpc.RpcError) or not hasattr(err, "code"):
        return Error(f"{what} at {target} failed: {err}")
    code = err.code()
    name = code.name if isinstance(code, grpc.StatusCode) else str(code)
    details = err.details() or "(no message)"
    if name == "UNAVAILABLE":
        details = f"not reachable or not serving: {details}"
    cls = _BY_CODE.get(name, Error)
    return cls(f"{what} at {target} failed: {details} ({name})", code=name)

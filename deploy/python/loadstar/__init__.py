"""loadstar: attach to models loaded by a loadstar cluster (SPEC §3.5).

    import loadstar
    client = loadstar.Client()                      # $LOADSTAR_ADDR, token, TLS
    with client.acquire("opt-125m") as lease:       # renewed in the background
        sd = lease.state_dict()                     # {name: torch.Tensor}, zero-copy views
    model = loadstar.transformers.load_model("opt-125m")

`loadstar.transformers` is imported on first use (it needs torch, transformers,
accelerate and bitsandbytes; the client itself needs only grpcio and protobuf).
"""
import importlib

from .client import Client
from .errors import (Aborted, AlreadyExists, Cancelled, DataLoss, DeadlineExceeded, Error,
                     FailedPrecondition, Internal, InvalidArgument, NotFound, NotMappable,
                     OutOfRange, PermissionDenied, ResourceExhausted, Unauthenticated,
                     Unavailable, Unimplemented, Unknown)
from .lease import Lease

__all__ = [
    "Client", "Lease", "Error", "Aborted", "AlreadyExists", "Cancelled", "DataLoss",
    "DeadlineExceeded", "FailedPrecondition", "Internal", "InvalidArgument", "NotFound",
    "NotMappable", "OutOfRange", "PermissionDenied", "ResourceExhausted", "Unauthenticated",
    "Unavailable", "Unimplemented", "Unknown",
]


def __getattr__(name):
    # loadstar.transformers pulls in torch + transformers: only when asked for.
    if name == "transformers":
        return importlib.import_module(".transformers", __name__)
    raise AttributeError(f"module 'loadstar' has no attribute {name!r}")

"""Mapping an instance's device memory into this process, without copying it.

host devices: the allocation is a POSIX shared-memory object (/dev/shm/<name>); it is
mapped read-only (PROT_READ), or copy-on-write (MAP_PRIVATE) when the caller wants
writable tensors, so the instance itself is never modified either way.

cuda devices: the allocation is exported as a cudaIpcMemHandle_t; it is opened with
cudaIpcOpenMemHandle from the libcudart that torch loaded (the same runtime, hence the
same context) and handed to torch through __cuda_array_interface__.

Each mapping holds a `keepalive` reference (the Lease), and every tensor made from it
holds the mapping, so the lease outlives the last tensor on its memory.

Only same-host consumers can map: `is_local_address` decides whether a worker is on this
host (loopback, or an address a socket here can bind).
"""
import ctypes
import errno
import mmap
import os
import socket

from . import errors

SHM_DIR = "/dev/shm"


def shm_path(shm_name):
    """The file of POSIX shm object `shm_name` ("/loadstar-..." as shm_open takes it)."""
    return os.path.join(SHM_DIR, shm_name.lstrip("/"))


def split_host_port(address):
    """("127.0.0.1", "7071") from "127.0.0.1:7071", ("::1", "7071") from "[::1]:7071"."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, rest.lstrip(":")
    host, sep, port = address.rpartition(":")
    return (host, port) if sep else (address, "")


def is_local_address(address):
    """True if the host of HOST:PORT `address` is this machine: a loopback address, the
    unspecified address, or one a socket here can bind (one of our interfaces)."""
    host, _ = split_host_port(address)
    if host in ("", "localhost"):
        return True
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        return False
    for family, _, _, _, sockaddr in infos:
        ip = sockaddr[0]
        if ip.startswith("127.") or ip in ("::1", "0.0.0.0", "::"):
            return True
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((ip, 0) if family == socket.AF_INET else (ip, 0, 0, 0))
                return True
        except OSError:
            continue
    return False


class HostRegion(mmap.mmap):
    """A mapping of a host device's shared-memory allocation (an mmap with a keepalive)."""

    keepalive = None

    @classmethod
    def open(cls, shm_name, size, writable, keepalive, where, offset=0):
        """Maps `size` bytes at `offset` of /dev/shm/<shm_name> (exactly the allocation:
        a pooled device's allocations share one object): PROT_READ, or MAP_PRIVATE (copy
        on write) when `writable`. `where` names the instance for errors."""
        if offset % mmap.ALLOCATIONGRANULARITY:
            raise errors.NotMappable(
                f"{where}: offset {offset} of {shm_name} is not a multiple of the page size "
                f"{mmap.ALLOCATIONGRANULARITY}")
        path = shm_path(shm_name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise errors.NotMappable(
                    f"{where}: its shared memory {path} does not exist on this host (the "
                    f"worker is on another host or the instance is gone); pass copy=True "
                    f"to stream the tensors over ReadTensor") from None
            raise errors.NotMappable(f"{where}: cannot open {path}: {e.strerror}") from None
        try:
            actual = os.fstat(fd).st_size
            if actual < offset + size:
                raise errors.NotMappable(
                    f"{where}: {path} holds {actual} bytes, the handle says {size} at "
                    f"offset {offset}")
            access = mmap.ACCESS_COPY if writable else mmap.ACCESS_READ
            region = cls(fd, size, access=access, offset=offset)
        finally:
            os.close(fd)
        region.keepalive = keepalive
        return region


class _IpcHandle(ctypes.Structure):
    _fields_ = [("reserved", ctypes.c_char * 64)]  # cudaIpcMemHandle_t


_CUDA_IPC_LAZY_ENABLE_PEER_ACCESS = 1
_cudart = None


def cudart():
    """The libcudart torch loaded (found in /proc/self/maps after CUDA is initialised)."""
    global _cudart
    if _cudart is None:
        import torch

        torch.cuda.init()
        path = None
        with open("/proc/self/maps") as maps:
            for line in maps:
                name = line.rsplit(None, 1)[-1]
                if "libcudart.so" in os.path.basename(name):
                    path = name
                    break
        if path is None:
            raise errors.NotMappable("torch has not loaded libcudart; cannot open CUDA IPC handles")
        lib = ctypes.CDLL(path)
        lib.cudaIpcOpenMemHandle.argtypes = [ctypes.POINTER(ctypes.c_void_p), _IpcHandle,
                                             ctypes.c_uint]
        lib.cudaIpcCloseMemHandle.argtypes = [ctypes.c_void_p]
        lib.cudaGetErrorString.restype = ctypes.c_char_p
        _cudart = lib
    return _cudart


def _normalized_uuid(uuid):
    u = str(uuid).strip().lower()
    return u[4:] if u.startswith("gpu-") else u


def cuda_device_index(device_uuid, where):
    """The torch CUDA device index whose UUID is `device_uuid` (as nvidia-smi prints it)."""
    import torch

    if not torch.cuda.is_available():
        raise errors.NotMappable(f"{where}: its memory is on a GPU ({device_uuid}) but torch "
                                 f"sees no CUDA device here; pass copy=True to stream it")
    want = _normalized_uuid(device_uuid)
    for i in range(torch.cuda.device_count()):
        if _normalized_uuid(torch.cuda.get_device_properties(i).uuid) == want:
            return i
    raise errors.NotMappable(f"{where}: no visible GPU has UUID {device_uuid} "
                             f"(CUDA_VISIBLE_DEVICES may hide it)")


class CudaRegion:
    """A GPU allocation opened from a cudaIpcMemHandle_t; `tensor()` is a flat uint8 view.

    Closed (cudaIpcCloseMemHandle) when the last tensor on it is gone: torch keeps this
    object alive through __cuda_array_interface__."""

    def __init__(self, ipc_handle, device_uuid, size, keepalive, where):
        import torch

        if len(ipc_handle) != ctypes.sizeof(_IpcHandle):
            raise errors.NotMappable(f"{where}: CUDA IPC handle of {len(ipc_handle)} bytes, "
                                     f"expected {ctypes.sizeof(_IpcHandle)}")
        self.device = cuda_device_index(device_uuid, where)
        self.size = size
        self.keepalive = keepalive
        lib = cudart()
        handle = _IpcHandle.from_buffer_copy(ipc_handle)
        ptr = ctypes.c_void_p()
        with torch.cuda.device(self.device):
            rc = lib.cudaIpcOpenMemHandle(ctypes.byref(ptr), handle,
                                          _CUDA_IPC_LAZY_ENABLE_PEER_ACCESS)
        if rc != 0:
            raise errors.NotMappable(f"{where}: cudaIpcOpenMemHandle failed: "
                                     f"{lib.cudaGetErrorString(rc).decode()} ({rc})")
        self.ptr = ptr.value
        self.__cuda_array_interface__ = {
            "shape": (size,), "typestr": "|u1", "data": (self.ptr, False), "version": 3,
            "strides": None}

    def tensor(self):
        import torch

        return torch.as_tensor(self, device=f"cuda:{self.device}")

    def address(self):
        return self.ptr

    def __del__(self):
        ptr = getattr(self, "ptr", None)
        if ptr:
            self.ptr = None
            cudart().cudaIpcCloseMemHandle(ctypes.c_void_p(ptr))

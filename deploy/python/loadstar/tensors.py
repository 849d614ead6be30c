"""Tensors of an instance, from its handle's tensor table.

`state_dict(lease)` gives {name: torch.Tensor} for every entry of the InstanceHandle:
views of the mapped device memory (zero copies: each tensor's storage lies inside the
mapping), or with copy=True tensors filled from the worker's ReadTensor stream (for a
consumer on another host). Quantized deployments serve the HF state-dict tensors of
bitsandbytes' serialization (packed codes, absmax, quant_map, ...); they are plain
tensors here, and loadstar.transformers turns them into bitsandbytes parameters.
"""
import warnings

from . import errors
from .mapping import CudaRegion, HostRegion, is_local_address

# safetensors dtype names (the tensor table's) -> torch dtype attribute names.
_TORCH_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}


def torch_dtype(name):
    """The torch dtype of safetensors dtype `name` ("F16" -> torch.float16)."""
    import torch

    attr = _TORCH_DTYPES.get(name)
    if attr is None or not hasattr(torch, attr):
        raise errors.Error(f"dtype {name!r} has no torch equivalent here")
    return getattr(torch, attr)


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def _check_entry(t, dtype, allocation_size, where):
    """Raises unless the table entry's size, dtype and shape agree and it lies inside."""
    import torch

    itemsize = torch.empty((), dtype=dtype).element_size()
    if _numel(t.shape) * itemsize != t.size:
        raise errors.Error(f"{where}: tensor {t.name} is {t.size} bytes but {t.dtype} "
                           f"{list(t.shape)} needs {_numel(t.shape) * itemsize}")
    if allocation_size is not None and t.offset + t.size > allocation_size:
        raise errors.Error(f"{where}: tensor {t.name} [{t.offset}, {t.offset + t.size}) lies "
                           f"outside its device's allocation of {allocation_size} bytes")


def _where(lease):
    inst = lease.instance
    return f"instance {inst.instance_id} of {lease.deployment} on worker {inst.worker_id} ({inst.worker_address})"


def state_dict(lease, writable=False, copy=False):
    """{name: torch.Tensor} of every tensor of `lease`'s instance.

    copy=False: zero-copy views of the mapped memory (this host only). Host memory is
    mapped read-only, or copy-on-write with writable=True (writes stay in this process);
    GPU memory (CUDA IPC) gives cuda tensors; writable does not apply to it (IPC memory
    cannot be made copy-on-write), so writable=True with cuda devices is refused.
    copy=True: every tensor streamed over ReadTensor into fresh (writable) CPU memory.
    """
    handle = lease.handle()
    where = _where(lease)
    if copy:
        return _streamed(lease, handle, where)
    if not is_local_address(lease.instance.worker_address):
        raise errors.NotMappable(
            f"{where} is on another host: its memory cannot be mapped here; pass copy=True "
            f"to stream the tensors over ReadTensor")
    return _mapped(lease, handle, writable, where)


def _mapped(lease, handle, writable, where):
    import torch

    allocations = {a.device: a for a in handle.allocations}
    flat = {}  # device index -> flat uint8 tensor (cuda) or region (host)

    def region_of(device):
        if device in flat:
            return flat[device]
        a = allocations.get(device)
        if a is None:
            raise errors.Error(f"{where}: no allocation for device {device}")
        if a.kind == "host":
            def open_host(w=False):
                return HostRegion.open(a.shm_name, a.size, w, lease, where, a.offset)
            flat[device] = open_host(True) if writable else lease.region(device, open_host)
        elif a.kind == "cuda":
            if writable:
                raise errors.Error(f"{where}: writable=True cannot apply to GPU memory mapped "
                                   f"over CUDA IPC; copy what you modify")
            flat[device] = lease.region(
                device, lambda: CudaRegion(a.ipc_handle, a.device_uuid, a.size, lease, where)).tensor()
        else:
            raise errors.NotMappable(f"{where}: device {device} has memory of kind {a.kind!r}")
        return flat[device]

    out = {}
    with warnings.catch_warnings():
        # torch warns that a read-only buffer gives a non-writable tensor: that is the point.
        warnings.filterwarnings("ignore", message=".*not writable.*")
        for t in handle.tensors:
            dtype = torch_dtype(t.dtype)
            alloc = allocations.get(t.device)
            _check_entry(t, dtype, alloc.size if alloc is not None else None, where)
            region = region_of(t.device)
            if t.size == 0:
                out[t.name] = torch.empty(tuple(t.shape), dtype=dtype)
            elif isinstance(region, HostRegion):
                out[t.name] = torch.frombuffer(region, dtype=dtype, count=_numel(t.shape),
                                               offset=t.offset).view(tuple(t.shape))
            else:
                out[t.name] = region[t.offset:t.offset + t.size].view(dtype).view(tuple(t.shape))
    return out


def _streamed(lease, handle, where):
    import torch

    out = {}
    for t in handle.tensors:
        dtype = torch_dtype(t.dtype)
        _check_entry(t, dtype, None, where)
        buf = bytearray(t.size)
        received = 0
        for chunk in lease.client.read_tensor(lease.instance.worker_address,
                                              handle.instance_id, t.name):
            end = chunk.offset + len(chunk.data)
            if end > t.size:
                raise errors.Error(f"{where}: ReadTensor({t.name}) sent bytes up to {end} of a "
                                   f"{t.size}-byte tensor")
            buf[chunk.offset:end] = chunk.data
            received += len(chunk.data)
        if received != t.size:
            raise errors.Error(f"{where}: ReadTensor({t.name}) sent {received} of {t.size} bytes")
        if t.size == 0:
            out[t.name] = torch.empty(tuple(t.shape), dtype=dtype)
        else:
            out[t.name] = torch.frombuffer(buf, dtype=dtype).view(tuple(t.shape))
    return out

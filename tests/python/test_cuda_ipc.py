"""The CUDA side of Lease.state_dict: a GPU allocation exported by another process as a
cudaIpcMemHandle_t is opened through loadstar.mapping.CudaRegion (cudaIpcOpenMemHandle on
the libcudart torch loaded) and viewed as torch cuda tensors without a copy.

Needs a GPU; on CPU-only machines it skips, saying so."""
import subprocess
import sys
import textwrap

import pytest
import torch

from loadstar.mapping import CudaRegion

EXPORTER = textwrap.dedent("""
    import ctypes, sys, torch
    from loadstar.mapping import _IpcHandle, cudart
    t = torch.arange(4096, dtype=torch.float16, device="cuda:0")
    lib = cudart()
    h = _IpcHandle()
    assert lib.cudaIpcGetMemHandle(ctypes.byref(h), ctypes.c_void_p(t.data_ptr())) == 0
    print(bytes(h).hex(), torch.cuda.get_device_properties(0).uuid, t.numel() * 2, flush=True)
    sys.stdin.readline()  # keep the allocation alive until the reader is done
""")


def test_cuda_ipc_allocation_is_viewed_in_place():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False): the CUDA IPC "
                    "mapping is exercised on GPU machines only")
    proc = subprocess.Popen([sys.executable, "-c", EXPORTER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        handle_hex, uuid, size = proc.stdout.readline().split()
        region = CudaRegion(bytes.fromhex(handle_hex), f"GPU-{uuid}", int(size), None, "test")
        flat = region.tensor()
        assert flat.device.type == "cuda" and flat.data_ptr() == region.address()
        values = flat.view(torch.float16)
        assert torch.equal(values.cpu(), torch.arange(4096, dtype=torch.float16))
        del values, flat, region
    finally:
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait(timeout=60)

#!/usr/bin/env python3
"""Writes a Hugging Face-style checkpoint with the real `safetensors` library, for
tests/store/python_fixture_test.cc (which checks loadstar reads it byte for byte).

Usage: make_safetensors_fixture.py OUT_DIR
Writes OUT_DIR/config.json, OUT_DIR/model.safetensors (via safetensors.numpy.save_file)
and OUT_DIR/expected.json: {name: {"dtype": "F32", "shape": [...], "hex": "..."}} with
each tensor's little-endian bytes, plus "__metadata__".
Needs: pip install safetensors numpy
"""
import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file

DTYPE_NAMES = {
    np.dtype("float64"): "F64", np.dtype("float32"): "F32", np.dtype("float16"): "F16",
    np.dtype("int64"): "I64", np.dtype("int32"): "I32", np.dtype("int16"): "I16",
    np.dtype("int8"): "I8", np.dtype("uint8"): "U8", np.dtype("bool"): "BOOL",
}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(1234)
    tensors = {
        "model.embed_tokens.weight": rng.standard_normal((33, 16)).astype(np.float16),
        "model.layers.0.self_attn.q_proj.weight": rng.standard_normal((16, 16)).astype(np.float32),
        "model.layers.0.mlp.scale": np.array(3.5, dtype=np.float64),  # scalar
        "model.norm.weight": rng.standard_normal((16,)).astype(np.float32),
        "ids": np.arange(-5, 7, dtype=np.int64),
        "counts": rng.integers(-1000, 1000, (3, 5), dtype=np.int32),
        "small": rng.integers(-128, 127, (7,), dtype=np.int8),
        "short": rng.integers(-30000, 30000, (3,), dtype=np.int16),
        "bytes": rng.integers(0, 255, (9,), dtype=np.uint8),
        "mask": rng.integers(0, 2, (2, 3)).astype(np.bool_),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    metadata = {"format": "pt", "producer": "make_safetensors_fixture.py"}
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata=metadata)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"model_type": "llama", "torch_dtype": "float16"}, f)
    expected = {"__metadata__": metadata}
    for name, array in tensors.items():
        # tobytes() is C order; np.ascontiguousarray would turn a scalar into shape [1].
        expected[name] = {
            "dtype": DTYPE_NAMES[array.dtype],
            "shape": list(array.shape),
            "hex": array.astype(array.dtype.newbyteorder("<")).tobytes().hex(),
        }
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)


if __name__ == "__main__":
    main()

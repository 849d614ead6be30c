#!/usr/bin/env python3
"""Reference GGUF files and dequantizations from gguf-py (the `gguf` package on PyPI), for
tests/store/gguf_reference_test.cc.

Usage: gguf_reference.py OUT_DIR
Writes OUT_DIR/blocks.gguf with GGUFWriter: one tensor per ggml block type loadstar reads
(F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K), each with an
odd row count. Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/BF16 are quantized from random floats with
gguf.quants.quantize; the K-quants are random block bytes whose fp16 scale fields are
overwritten with finite values (any such bytes are valid blocks). Also a few metadata
values of every scalar type and string/int arrays.

OUT_DIR/expected.json: {"tensors": [{"name", "type", "dims" (ggml order), "data_offset"
(absolute, from GGUFReader), "nbytes", "dequant" (file name of gguf.quants.dequantize's
fp32 output, little-endian)}], "metadata": {key: value}, "alignment", "version"}.
Needs: pip install gguf numpy
"""
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize, dequantize

QK_K = 256
# Byte offsets of the fp16 scale fields in each K-quant block (gguf/quants.py layouts).
K_SCALE_FIELDS = {
    T.Q2_K: [QK_K // 16 + QK_K // 4, QK_K // 16 + QK_K // 4 + 2],  # d, dmin at the end
    T.Q3_K: [QK_K // 8 + QK_K // 4 + 12],                           # d at the end
    T.Q4_K: [0, 2],                                                  # d, dmin first
    T.Q5_K: [0, 2],
    T.Q6_K: [QK_K // 2 + QK_K // 4 + QK_K // 16],                   # d at the end
}


def random_k_blocks(rng, qtype, n_blocks):
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for off in K_SCALE_FIELDS[qtype]:
        scale = (rng.standard_normal(n_blocks) * 0.01).astype(np.float16)
        blocks[:, off:off + 2] = scale.view(np.uint8).reshape(n_blocks, 2)
    return blocks


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20261202)
    writer = gguf.GGUFWriter(os.path.join(out, "blocks.gguf"), arch="llama")
    writer.add_uint8("test.u8", 200)
    writer.add_int8("test.i8", -100)
    writer.add_uint16("test.u16", 60000)
    writer.add_int16("test.i16", -30000)
    writer.add_uint32("test.u32", 4000000000)
    writer.add_int32("test.i32", -2000000000)
    writer.add_float32("test.f32", 0.1)
    writer.add_uint64("test.u64", 2**40 + 3)
    writer.add_int64("test.i64", -(2**40))
    writer.add_float64("test.f64", 0.1)
    writer.add_bool("test.bool", True)
    writer.add_string("test.string", "héllo")
    writer.add_array("test.strings", ["a", "", "ünï"])
    writer.add_array("test.ints", [1, -2, 3])

    types = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1,
             T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
    expected = []
    for qtype in types:
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        cols = 2 * max(block, 32)
        rows = 3  # odd, so a row count is never a convenient multiple
        if qtype in K_SCALE_FIELDS:
            raw = random_k_blocks(rng, qtype, rows * cols // block).reshape(rows, -1)
        else:
            values = rng.standard_normal((rows, cols)).astype(np.float32)
            values[0, :5] = [0.0, -0.0, 1e-8, 3.0, -3.0]
            raw = quantize(values, qtype)
        name = f"t.{qtype.name.lower()}"
        raw_bytes = np.ascontiguousarray(raw).view(np.uint8).reshape(rows, -1)
        writer.add_tensor(name, raw_bytes, raw_shape=raw_bytes.shape, raw_dtype=qtype)
        deq = dequantize(raw_bytes, qtype).astype(np.float32)
        assert deq.shape == (rows, cols), (qtype, deq.shape)
        fname = f"{name}.f32"
        deq.astype("<f4").tofile(os.path.join(out, fname))
        expected.append({"name": name, "type": qtype.name, "dims": [cols, rows],
                         "dequant": fname})
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    reader = gguf.GGUFReader(os.path.join(out, "blocks.gguf"))
    by_name = {t.name: t for t in reader.tensors}
    for e in expected:
        t = by_name[e["name"]]
        e["data_offset"] = int(t.data_offset)
        e["nbytes"] = int(t.n_bytes)
        assert [int(d) for d in t.shape] == e["dims"], (t.shape, e["dims"])
    metadata = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        metadata[key] = field.contents()
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"tensors": expected, "metadata": metadata, "alignment": reader.alignment,
                   "data_offset": int(reader.data_offset)}, f, indent=1)


if __name__ == "__main__":
    main()

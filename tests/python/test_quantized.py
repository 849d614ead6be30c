"""Quantized deployments attach as bitsandbytes layers built from the loaded bytes.

For nf4, nf4 + double quant, fp4 with blocksize 128 and int8 (LLM.int8 weights), the
model from load_model must give logits bit-identical (torch.equal) to transformers
loading loadstar's own `store export` of the same config, and within a stated tolerance
of transformers + bitsandbytes quantizing the fp16 checkpoint on the fly (bnb's CPU
quantizer differs from its CUDA kernels, which loadstar follows, on values at a decision
threshold: tests/data/make_bnb_golden.py).
"""
import copy

import bitsandbytes as bnb
import pytest
import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

import checkpoints
import loadstar.transformers as lt

PROMPT = torch.tensor([[1, 17, 230, 5, 99, 400, 12, 311, 64, 2]])

# name, quantization_config for load_model, `store export` flags, BitsAndBytesConfig kwargs
CASES = [
    ("nf4", {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}, ("nf4", None),
     {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}),
    ("nf4-dq", {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                "bnb_4bit_use_double_quant": True}, ("nf4-dq", None),
     {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True}),
    ("fp4-bs128", {"load_in_4bit": True, "bnb_4bit_quant_type": "fp4", "bnb_4bit_blocksize": 128},
     ("fp4", 128), {"load_in_4bit": True, "bnb_4bit_quant_type": "fp4"}),
    ("int8", {"load_in_8bit": True}, ("int8", None), {"load_in_8bit": True}),
]
# Relative to the largest |logit|: how far on-the-fly bnb quantization may land.
ON_THE_FLY_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return checkpoints.llama_fp16(str(tmp_path_factory.mktemp("llama-fp16")))


def logits(model):
    with torch.no_grad():
        return model(PROMPT).logits


def on_the_fly(src, bnb_kwargs, blocksize):
    """transformers + bitsandbytes quantizing the checkpoint at load. BitsAndBytesConfig has
    no blocksize (bnb uses 64): for another blocksize each 4-bit weight is re-quantized
    from the checkpoint's fp16 weight by bitsandbytes with that blocksize."""
    model = AutoModelForCausalLM.from_pretrained(
        src, dtype=torch.float16, device_map="cpu",
        quantization_config=BitsAndBytesConfig(**bnb_kwargs))
    if blocksize:
        fp16 = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float16)
        for name, m in model.named_modules():
            if isinstance(m, bnb.nn.Linear4bit):
                w = fp16.get_submodule(name).weight.data
                p = bnb.nn.Params4bit(w, requires_grad=False, blocksize=blocksize,
                                      quant_type=m.weight.quant_type, module=m)
                m.weight = p.to("cpu")
                assert m.weight.quant_state.blocksize == blocksize
    return model


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_quantized_matches_export_and_bnb(cluster, client, src, tmp_path, case):
    name, qc, (export_kind, blocksize), bnb_kwargs = case
    model_name = f"llama-{name}"
    cluster.save(src, model_name)
    model = lt.load_model(model_name, torch_dtype=torch.float16, quantization_config=qc,
                          client=client)
    handle = model.loadstar_lease.handle()
    assert handle.spec.quantization.method == export_kind.split("-")[0]
    layer = model.model.layers[0].mlp.down_proj
    if export_kind == "int8":
        assert isinstance(layer, bnb.nn.Linear8bitLt)
        assert layer.weight.dtype == torch.int8
    else:
        assert isinstance(layer, bnb.nn.Linear4bit)
        qs = layer.weight.quant_state
        assert qs.blocksize == (blocksize or 64)
        # On CPUs with AVX512-BF16 bitsandbytes computes from its own CPU layout, which
        # load_model builds up front (quantized.prepack_for_cpu) instead of at the first forward.
        packed = getattr(qs, "packing_format_for_cpu", False)
        assert packed == bool(bnb.functional.has_avx512bf16())
        assert (qs.original_nested if packed else qs.nested) == (export_kind == "nf4-dq")
        assert qs.quant_type == export_kind.split("-")[0]
        described = model.config.quantization_config.to_dict()
        assert described.get("bnb_4bit_blocksize", 64) == (blocksize or 64)
    # No re-quantization: the layer's bytes are the instance's mapped bytes, or (4-bit on
    # CPUs with AVX512-BF16) bitsandbytes' CPU layout of exactly those bytes.
    served = model.loadstar_lease.state_dict()["model.layers.0.mlp.down_proj.weight"]
    if getattr(getattr(layer.weight, "quant_state", None), "packing_format_for_cpu", False):
        back, _ = bnb.functional._convert_weight_packed_for_cpu_inverse(
            layer.weight.data, copy.deepcopy(layer.weight.quant_state))
        assert torch.equal(back.reshape(-1), served.reshape(-1))
    else:
        assert layer.weight.data.data_ptr() == served.data_ptr()
    assert isinstance(model.lm_head, torch.nn.Linear)  # llm_int8_skip_modules default

    ours = logits(model)
    exported = cluster.export(model_name, export_kind, str(tmp_path / "export"), blocksize)
    ref = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float16, device_map="cpu")
    theirs = logits(ref)
    assert torch.equal(ours, theirs), \
        f"{name}: logits differ from the export's by {(ours.float() - theirs.float()).abs().max()}"

    fly = logits(on_the_fly(src, bnb_kwargs, blocksize)).float()
    err = (ours.float() - fly).abs().max().item()
    scale = fly.abs().max().item()
    print(f"{name}: max logit difference to on-the-fly bnb {err:.4g} (max abs logit {scale:.4g})")
    assert err <= ON_THE_FLY_TOLERANCE * scale, f"{name}: {err} off on-the-fly bnb (max |logit| {scale})"
    model.loadstar_lease.release()


def test_stored_nf4_variant_attaches(cluster, client, src, tmp_path):
    """A model saved with --quantize nf4 loads its stored artifact; same bytes as export."""
    cluster.save(src, "llama-nf4-stored", "--quantize", "nf4")
    model = lt.load_model("llama-nf4-stored", torch_dtype=torch.float16,
                          quantization_config=BitsAndBytesConfig(load_in_4bit=True,
                                                                 bnb_4bit_quant_type="nf4"),
                          client=client)
    ref = AutoModelForCausalLM.from_pretrained(
        cluster.export("llama-nf4-stored", "nf4", str(tmp_path / "export")),
        dtype=torch.float16, device_map="cpu")
    assert torch.equal(logits(model), logits(ref))
    model.loadstar_lease.release()


def test_quantization_other_than_served_is_refused(client, src):
    # llama-nf4 exists (nf4, bs 64): asking it for int8 must not quietly give nf4.
    with pytest.raises(ValueError, match="serves quantization"):
        lt.load_model("llama-nf4", quantization_config={"load_in_8bit": True}, client=client)

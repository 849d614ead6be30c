"""Saved bitsandbytes checkpoints (the HF layout `store export` and transformers write) are
stored as they are and attach as bitsandbytes layers: load_model of the stored bnb
directory gives logits identical (torch.equal) to transformers loading that directory, for
nf4 with double quant and for int8. quantization none equals transformers'
model.dequantize() of the directory; another quantization equals transformers quantizing
that dequantized model.
"""
import pytest
import torch
from transformers import AutoModelForCausalLM

import checkpoints
import loadstar
import loadstar.transformers as lt

PROMPT = torch.tensor([[1, 17, 230, 5, 99, 400, 12, 311, 64, 2]])


@pytest.fixture(scope="module")
def src(cluster, tmp_path_factory):
    path = checkpoints.llama_fp16(str(tmp_path_factory.mktemp("llama-fp16")))
    cluster.save(path, "llama-bnb-orig")
    return path


@pytest.mark.parametrize("kind,qc", [
    ("nf4-dq", {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                "bnb_4bit_use_double_quant": True}),
    ("int8", {"load_in_8bit": True}),
])
def test_saved_bnb_attaches_as_stored(cluster, client, src, tmp_path, kind, qc):
    exported = cluster.export("llama-bnb-orig", kind, str(tmp_path / kind))
    name = f"llama-bnb-saved-{kind}"
    cluster.save(exported, name)
    model = lt.load_model(name, torch_dtype=torch.float16, quantization_config=qc,
                          client=client)
    ref = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float16, device_map="cpu")
    with torch.no_grad():
        ours, theirs = model(PROMPT).logits, ref(PROMPT).logits
    assert torch.equal(ours, theirs), f"{kind}: logits differ by {(ours - theirs).abs().max()}"
    model.loadstar_lease.release()


@pytest.mark.parametrize("kind", ["nf4-dq", "fp4", "int8"])
def test_saved_bnb_dequantized_equals_transformers(cluster, client, src, tmp_path, kind):
    """quantization none: every tensor equals transformers' own model.dequantize() of the
    saved directory (bitsandbytes' dequantize_4bit / int8 SCB scaling), and so do the
    logits."""
    exported = cluster.export("llama-bnb-orig", kind, str(tmp_path / kind))
    name = f"llama-bnb-deq-{kind}"
    cluster.save(exported, name)
    model = lt.load_model(name, torch_dtype=torch.float16, client=client, quantization="none")
    ref = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float16, device_map="cpu")
    ref.dequantize()
    ours, theirs = model.state_dict(), ref.state_dict()
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype, key
        assert torch.equal(ours[key], value), f"{kind} {key}: differs by {(ours[key].float() - value.float()).abs().max()}"
    with torch.no_grad():
        assert torch.equal(model(PROMPT).logits, ref(PROMPT).logits)
    assert getattr(model.config, "quantization_config", None) is None
    model.loadstar_lease.release()


def test_saved_bnb_requantized(cluster, client, src, tmp_path):
    """Another quantization than the saved one: the saved int8 model served nf4 equals the
    model transformers dequantizes from it (model.dequantize(), save_pretrained) served nf4
    (whose nf4 load test_quantized checks against transformers)."""
    exported = cluster.export("llama-bnb-orig", "int8", str(tmp_path / "int8"))
    cluster.save(exported, "llama-bnb-saved-requant")
    deq = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float16, device_map="cpu")
    deq.dequantize()
    deq_dir = str(tmp_path / "int8-dequantized")
    deq.save_pretrained(deq_dir)
    cluster.save(deq_dir, "llama-bnb-dequantized")
    qc = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    model = lt.load_model("llama-bnb-saved-requant", torch_dtype=torch.float16,
                          quantization_config=qc, client=client)
    ref = lt.load_model("llama-bnb-dequantized", torch_dtype=torch.float16,
                        quantization_config=qc, client=client)
    ours, theirs = model.loadstar_lease.state_dict(), ref.loadstar_lease.state_dict()
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key
    with torch.no_grad():
        assert torch.equal(model(PROMPT).logits, ref(PROMPT).logits)
    model.loadstar_lease.release()
    ref.loadstar_lease.release()

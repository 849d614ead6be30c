"""Saved bitsandbytes checkpoints (the HF layout `store export` and transformers write) are
stored as they are and attach as bitsandbytes layers: load_model of the stored bnb
directory gives logits identical (torch.equal) to transformers loading that directory, for
nf4 with double quant and for int8. Asking it for another quantization is refused.
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


def test_saved_bnb_other_quantization_is_refused(cluster, client, src, tmp_path):
    exported = cluster.export("llama-bnb-orig", "nf4", str(tmp_path / "nf4"))
    cluster.save(exported, "llama-bnb-saved-refuse")
    with pytest.raises(loadstar.Error, match="saved bitsandbytes nf4-bs64 checkpoint"):
        lt.load_model("llama-bnb-saved-refuse", quantization_config={"load_in_8bit": True},
                      client=client)

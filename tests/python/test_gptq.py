"""GPTQ and AWQ checkpoints attached with loadstar.transformers.load_model and
`quantization: none` are transformers models whose weights are the packed layers'
dequantization (the numpy reference of tests/data/gptq_reference.py): identical fp32
logits to a transformers Llama holding those weights. Without a named quantization the
deployment serves them as stored (keep), which load_model refuses with a clear error.
"""
import pytest
import torch
from transformers import LlamaForCausalLM

import checkpoints
import loadstar
import loadstar.transformers as lt

PROMPT = torch.tensor([[1, 31, 414, 100, 27, 5, 312, 99]])


def reference(src, weights):
    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(src)
    del config.quantization_config
    model = LlamaForCausalLM(config).eval()
    sd = model.state_dict()
    from safetensors.torch import load_file
    for name, value in load_file(f"{src}/model.safetensors").items():
        if name in sd:
            sd[name] = value.float()
    for module, w in weights.items():
        sd[module + ".weight"] = w
    model.load_state_dict(sd)
    return model


@pytest.mark.parametrize("kind", ["gptq-3bit-actorder", "gptq-4bit-sym", "awq"])
def test_packed_none_matches_dequantized_reference(cluster, client, tmp_path, kind):
    src, weights = checkpoints.llama_gptq(str(tmp_path / kind), bits=3 if "3bit" in kind else 4,
                                          act_order="actorder" in kind, awq=kind == "awq",
                                          sym="sym" in kind)
    name = f"llama-{kind}"
    cluster.save(src, name)
    model = lt.load_model(name, torch_dtype=torch.float32, client=client, quantization="none")
    ref = reference(src, weights)
    for module, w in weights.items():
        assert torch.equal(model.get_submodule(module).weight, w), module
    with torch.no_grad():
        ours, theirs = model(PROMPT).logits, ref(PROMPT).logits
    assert torch.equal(ours, theirs), f"logits differ by {(ours - theirs).abs().max()}"
    model.loadstar_lease.release()


def test_packed_default_is_keep(cluster, client, tmp_path):
    src, _ = checkpoints.llama_gptq(str(tmp_path / "keep"))
    cluster.save(src, "llama-gptq-keep")
    with pytest.raises(loadstar.Error, match="serves quantization keep"):
        lt.load_model("llama-gptq-keep", torch_dtype=torch.float32, client=client)

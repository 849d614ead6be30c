"""A GGUF checkpoint attached with loadstar.transformers.load_model (quantization none)
equals transformers' own GGUF load, AutoModelForCausalLM.from_pretrained(dir,
gguf_file=...): identical fp32 logits and greedy tokens. The GGUF file is a transformers
Llama converted by gguf-py as llama.cpp does (tests/python/checkpoints.py llama_gguf).
Also: an nf4 deploy of it attaches (dequantized, then quantized while loading), and
`keep` (packed blocks, for engines) is refused by load_model with a clear error.
"""
import importlib.util
import os

import pytest
import torch

import checkpoints
import loadstar
import loadstar.transformers as lt

if importlib.util.find_spec("gguf") is None:
    pytest.skip("gguf (gguf-py) is not installed", allow_module_level=True)

PROMPT = torch.tensor([[1, 31, 414, 100, 27, 5, 312, 99]])


@pytest.fixture(scope="module")
def gguf_model(cluster, tmp_path_factory):
    hf, path = checkpoints.llama_gguf(str(tmp_path_factory.mktemp("gguf")))
    cluster.save(path, "llama-gguf")
    return path


def test_gguf_none_matches_transformers_gguf_loader(client, gguf_model):
    from transformers import AutoModelForCausalLM
    ref = AutoModelForCausalLM.from_pretrained(os.path.dirname(gguf_model),
                                               gguf_file=os.path.basename(gguf_model),
                                               dtype=torch.float32)
    model = lt.load_model("llama-gguf", torch_dtype=torch.float32, client=client,
                          quantization="none")
    assert model.dtype == ref.dtype == torch.float32
    ref_sd = ref.state_dict()
    for name, p in model.state_dict().items():
        assert torch.equal(p, ref_sd[name]), name
    with torch.no_grad():
        ours, theirs = model(PROMPT).logits, ref(PROMPT).logits
    assert torch.equal(ours, theirs), f"logits differ by {(ours - theirs).abs().max()}"
    with torch.no_grad():
        a = model.generate(PROMPT, max_new_tokens=10, min_new_tokens=10, do_sample=False)
        b = ref.generate(PROMPT, max_new_tokens=10, min_new_tokens=10, do_sample=False)
    assert torch.equal(a, b)
    model.loadstar_lease.release()


def test_gguf_tokenizer_matches_transformers(client, gguf_model):
    """load_tokenizer of a GGUF model (its metadata kept as tokenizer.gguf) equals
    transformers' tokenizer from the original file."""
    from transformers import AutoTokenizer
    ref = AutoTokenizer.from_pretrained(os.path.dirname(gguf_model),
                                        gguf_file=os.path.basename(gguf_model))
    ours = lt.load_tokenizer("llama-gguf", client=client)
    assert ours.get_vocab() == ref.get_vocab()
    for text in ["the cat is hat", "a tea, the heat!", "\u00e9t\u00e9 \U0001F600"]:
        assert ours(text).input_ids == ref(text).input_ids, text
    assert ours.bos_token == ref.bos_token == "<s>"


def test_gguf_nf4_attaches(cluster, client, gguf_model):
    """nf4: the GGUF weights dequantized, then quantized bnb-exact while loading."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    cluster.save(gguf_model, "llama-gguf-nf4")
    ref = AutoModelForCausalLM.from_pretrained(os.path.dirname(gguf_model),
                                               gguf_file=os.path.basename(gguf_model),
                                               dtype=torch.float32)
    model = lt.load_model("llama-gguf-nf4", torch_dtype=torch.float32, client=client,
                          quantization_config=BitsAndBytesConfig(
                              load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=torch.float32))
    with torch.no_grad():
        ours, theirs = model(PROMPT).logits, ref(PROMPT).logits
    assert torch.isfinite(ours).all()
    cos = torch.nn.functional.cosine_similarity(ours.flatten(), theirs.flatten(), dim=0)
    assert cos > 0.95, f"nf4 logits cosine {cos}"
    model.loadstar_lease.release()


def test_gguf_keep_is_refused_by_load_model(cluster, client, gguf_model):
    cluster.save(gguf_model, "llama-gguf-keep")
    with pytest.raises(loadstar.Error, match="quantization keep"):
        lt.load_model("llama-gguf-keep", client=client, quantization="keep")


def test_gguf_keep_handle_carries_the_format(cluster, client, gguf_model):
    """keep: every packed tensor of the instance handle says how to read it."""
    import json
    cluster.save(gguf_model, "llama-gguf-keep-handle")
    client.deploy("llama-gguf-keep-handle", quantization="keep", min_instances=1)
    with client.acquire("llama-gguf-keep-handle") as lease:
        tensors = {t.name: t for t in lease.handle().tensors}
        q = json.loads(tensors["model.layers.0.self_attn.q_proj.weight"].quant.prequant)
        assert q["format"] == "gguf" and q["ggml_type"] == "Q8_0"
        assert q["source_name"] == "blk.0.attn_q.weight" and q["permute_heads"] == 8
        assert tensors["model.layers.0.self_attn.q_proj.weight"].dtype == "U8"

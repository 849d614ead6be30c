"""Causal LMs attached with loadstar.transformers.load_model equal transformers' own load.

Checkpoints are transformers save_pretrained outputs: an OPT with tied embeddings in
fp16, sharded (lm_head absent from the files), and a Llama with grouped-query attention
in bf16. The attached model must produce bit-identical logits (torch.equal, same dtype)
and the same 20 greedy tokens as AutoModelForCausalLM.from_pretrained(dir), with its
parameters living in the worker's shared memory (no copy in this process).
"""
import gc
import glob
import os

import pytest
import torch
from transformers import AutoModelForCausalLM

import checkpoints
import loadstar
import loadstar.transformers as lt

PROMPT = torch.tensor([[2, 31, 414, 1000, 27, 5, 812, 99]])


@pytest.fixture(scope="module")
def opt(cluster, client, tmp_path_factory):
    src = checkpoints.opt_fp16_sharded(str(tmp_path_factory.mktemp("opt")))
    cluster.save(src, "opt-tied")
    client.deploy("opt-tied", torch_dtype="float16", min_instances=1)
    return src


@pytest.fixture(scope="module")
def llama(cluster, tmp_path_factory):
    src = checkpoints.llama_bf16_gqa(str(tmp_path_factory.mktemp("llama")))
    cluster.save(src, "llama-gqa")
    return src


def greedy(model):
    with torch.no_grad():
        return model.generate(PROMPT, max_new_tokens=20, min_new_tokens=20, do_sample=False)


def assert_same_as_transformers(model, src, dtype):
    ref = AutoModelForCausalLM.from_pretrained(src, dtype=dtype)
    assert model.dtype == ref.dtype == dtype
    with torch.no_grad():
        ours, theirs = model(PROMPT).logits, ref(PROMPT).logits
    assert ours.dtype == theirs.dtype == dtype
    assert torch.equal(ours, theirs), f"logits differ by {(ours.float() - theirs.float()).abs().max()}"
    a, b = greedy(model), greedy(ref)
    assert a.shape[1] == PROMPT.shape[1] + 20
    assert torch.equal(a, b), f"greedy tokens differ:\n{a}\n{b}"


def test_opt_sharded_fp16_tied_matches_transformers(client, opt):
    assert len(glob.glob(os.path.join(opt, "model-*.safetensors"))) >= 2
    model = lt.load_model("opt-tied", torch_dtype=torch.float16, client=client)
    # The output head is not in the checkpoint: it is the token embedding, tied again.
    assert model.lm_head.weight is model.get_input_embeddings().weight
    assert_same_as_transformers(model, opt, torch.float16)
    model.loadstar_lease.release()


def test_llama_gqa_bf16_matches_transformers(client, llama):
    with pytest.raises(loadstar.NotFound):
        client.status("llama-gqa")
    # load_model deploys what does not exist, with its arguments.
    model = lt.load_model("llama-gqa", torch_dtype="bfloat16", client=client, keep_alive=30)
    assert client.status("llama-gqa").keep_alive_seconds == 30
    cfg = model.config
    assert cfg.num_key_value_heads < cfg.num_attention_heads
    assert_same_as_transformers(model, llama, torch.bfloat16)
    model.loadstar_lease.release()


def test_parameters_are_the_mapped_memory(client, opt):
    lt.load_model("opt-tied", client=client).loadstar_lease.release()  # imports, files, instance warm
    lease = client.acquire("opt-tied")
    handle = lease.handle()
    assert handle.bytes > 50e6
    gc.collect()
    before = checkpoints.rss_anon_bytes()
    model = lt.load_model(lease)
    grown = checkpoints.rss_anon_bytes() - before
    assert grown < 0.1 * handle.bytes, f"private memory grew {grown} bytes for a {handle.bytes}-byte model"

    ranges = checkpoints.shm_mappings([a.shm_name for a in handle.allocations])
    assert ranges, "no mapping of the instance's shared memory in this process"
    for name, p in model.named_parameters():
        ptr = p.untyped_storage().data_ptr()
        assert any(lo <= ptr and ptr + p.untyped_storage().nbytes() <= hi for lo, hi in ranges), \
            f"{name} is not inside the instance's mapped memory"
    del model
    lease.release()


def test_state_dict_maps_without_touching(client, opt):
    with client.acquire("opt-tied") as lease:
        handle = lease.handle()
        before = checkpoints.rss_bytes()
        sd = lease.state_dict()
        grown = checkpoints.rss_bytes() - before
        assert grown < 0.1 * handle.bytes, f"RSS grew {grown} bytes mapping {handle.bytes}"
        assert set(sd) == {t.name for t in handle.tensors}
        names = [a.shm_name for a in handle.allocations]
        # Read-only shared mappings: the instance can never be modified through them.
        assert checkpoints.shm_mappings(names, "r--s")
        assert not checkpoints.shm_mappings(names, "rw-s")
        # Copy-on-write views: writes stay in this process.
        mine = lease.state_dict(writable=True)
        assert checkpoints.shm_mappings(names, "rw-p")
        w = mine["model.decoder.final_layer_norm.weight"]
        original = sd["model.decoder.final_layer_norm.weight"].clone()
        w.add_(1)
        assert torch.equal(sd["model.decoder.final_layer_norm.weight"], original)
        assert torch.equal(lease.state_dict()["model.decoder.final_layer_norm.weight"], original)
        # Streamed copies equal the mapped bytes.
        copied = lease.state_dict(copy=True)
        assert all(torch.equal(copied[k], sd[k]) for k in sd)


def test_model_garbage_collected_releases_its_lease(client, opt):
    model = lt.load_model("opt-tied", client=client)
    lease_id = model.loadstar_lease.id
    assert client.get_lease(lease_id).lease_id == lease_id
    del model
    gc.collect()
    with pytest.raises(loadstar.NotFound):
        client.get_lease(lease_id)


def test_dtype_other_than_served_is_refused(client, opt):
    with pytest.raises(ValueError, match="serves torch_dtype float16, not bfloat16"):
        lt.load_model("opt-tied", torch_dtype=torch.bfloat16, client=client)
    # The lease taken to find out was released.
    dep = client.status("opt-tied")
    assert sum(i.leases for i in dep.instances) == 0


def test_parameter_missing_from_the_instance_is_named(client, opt, monkeypatch):
    with client.acquire("opt-tied") as lease:
        served = lease.state_dict
        monkeypatch.setattr(lease, "state_dict", lambda **kw: {
            k: v for k, v in served(**kw).items() if k != "model.decoder.layers.1.fc1.weight"})
        with pytest.raises(loadstar.Error, match=r"missing .*model\.decoder\.layers\.1\.fc1\.weight"):
            lt.load_model(lease)
        with pytest.raises(TypeError, match="cannot apply to an existing lease"):
            lt.load_model(lease, min_instances=2)


def test_same_model_under_another_name_and_dtype(client, opt):
    """load_model deploys the stored fp16 OPT a second time, named, cast to bf16 by the
    loader: the same as transformers casting the checkpoint at load."""
    model = lt.load_model("opt-tied-bf16", model="opt-tied", torch_dtype=torch.bfloat16,
                          client=client)
    dep = client.status("opt-tied-bf16")
    assert dep.model == "opt-tied" and dep.name == "opt-tied-bf16"
    assert_same_as_transformers(model, opt, torch.bfloat16)
    model.loadstar_lease.release()

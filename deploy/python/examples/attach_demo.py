#!/usr/bin/env python3
"""Attach to a running loadstar cluster from Python and use the weights (scripts/run's end).

  attach_demo.py CAUSAL_LM EMBEDDER

CAUSAL_LM (e.g. opt-125m, deployed nf4): load_model, then greedy-generate tokens from a
few token ids (the demo checkpoint has random weights and no tokenizer).
EMBEDDER (e.g. all-minilm-l6-v2): load_model(hf_model_class="AutoModel") with the tokenizer
the store kept, then a mean-pooled sentence embedding.
For each it prints whether the lease cold-started the instance, the time from asking to the
first token / embedding, and the time from this process's start (imports included).
Needs LOADSTAR_ADDR (or the default 127.0.0.1:7070).
"""
import sys
import time

START = time.perf_counter()

import torch  # noqa: E402

import loadstar  # noqa: E402
import loadstar.transformers as lt  # noqa: E402


def since(t):
    return time.perf_counter() - t


def generate(client, name):
    t = time.perf_counter()
    model = lt.load_model(name, client=client)
    lease = model.loadstar_lease
    prompt = torch.tensor([[2, 1000, 2000, 3000, 4000]])
    loaded_s = since(t)
    with torch.no_grad():
        first = model.generate(prompt, max_new_tokens=1, do_sample=False)
        first_s = since(t)
        out = model.generate(prompt, max_new_tokens=16, do_sample=False)
    layers = sum(type(m).__name__ == "Linear4bit" for m in model.modules())
    print(f"{name}: {'cold start' if lease.cold_start else 'instance already loaded'}, "
          f"{handle_summary(lease)}, {layers} bnb Linear4bit layers from the served bytes (no re-quantization)")
    print(f"  first token {int(first[0, -1])} after {first_s:.3f} s: load_model {loaded_s:.3f} s "
          f"(acquire, map, build; a process's first call also imports the model's "
          f"transformers module), generate {first_s - loaded_s:.3f} s "
          f"(process start -> first token {since(START):.3f} s)")
    print(f"  greedy tokens: {out[0, prompt.shape[1]:].tolist()}")
    lease.release()


def embed(client, name):
    t = time.perf_counter()
    model = lt.load_model(name, hf_model_class="AutoModel", client=client)
    lease = model.loadstar_lease
    tokenizer = lt.load_tokenizer(lease)
    batch = tokenizer(["loadstar hands the weights to the engine."], return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    vec = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)[0]
    print(f"{name}: {'cold start' if lease.cold_start else 'instance already loaded'}, "
          f"{handle_summary(lease)}")
    print(f"  embedding ({vec.numel()} dims, norm {vec.norm():.4f}) after {since(t):.3f} s: "
          f"{[round(v, 4) for v in vec[:6].tolist()]} ...")
    lease.release()


def handle_summary(lease):
    h = lease.handle()
    kinds = sorted({a.kind for a in h.allocations})
    return (f"instance {h.instance_id} on {h.worker_id}, {len(h.tensors)} tensors, "
            f"{h.bytes / 2**20:.1f} MiB in {'/'.join(kinds)} memory, zero-copy")


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with loadstar.Client() as client:
        generate(client, argv[0])
        embed(client, argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

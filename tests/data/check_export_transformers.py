#!/usr/bin/env python3
"""Checks `loadstar store export` output with transformers + bitsandbytes on CPU.

Two modes, driven by tests/deploy/quant_cli_test.cc (ExportLoadsInTransformers):

  make SRC                 writes a tiny random-weight LlamaForCausalLM (float16) with
                           save_pretrained: the checkpoint loadstar stores and exports.
  check SRC OUT KIND       loads the exported OUT (KIND nf4 | nf4-dq | fp4 | int8) with
                           AutoModelForCausalLM.from_pretrained on CPU and checks, for every
                           quantized Linear:
                             * the parameters transformers loaded are the exported bytes
                               (packed 4-bit codes / int8 weight and SCB, bit-equal);
                             * they equal bitsandbytes' own CPU quantization of SRC's fp16
                               weight (quantize_4bit / int8_vectorwise_quant) bit for bit,
                               except where bnb's CPU backend is known to differ from its
                               CUDA kernels, which loadstar follows (make_bnb_golden.py):
                               FP4 sign of zero, values within 1e-6 of a 4-bit decision
                               threshold, nested-absmax and int8 codes where loadstar's is
                               the nearer one (each such case is checked and counted);
                             * bitsandbytes' dequantization is within the format's error of
                               the original weight;
                           and that a forward pass gives finite logits close to fp16's.

Prints one line per problem and exits 1, or prints "OK ..." and exits 0.
Run: .venv-bnb/bin/python tests/data/check_export_transformers.py make /tmp/src
"""
import json
import os
import sys

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


# Decision thresholds of the CUDA kernels (SPEC §6): NF4 on x_n, FP4 on |x_n|.
NF4_T = [0.03979014977812767, 0.3893125355243683, 0.6427869200706482, 0.8614784181118011,
         0.5016634166240692, 0.2035212516784668, 0.2920137718319893, 0.1202552504837513,
         -0.33967943489551544, -0.13791173323988914, -0.045525018125772476,
         -0.23460740596055984, -0.6106329262256622, -0.4599952697753906, -0.8480964004993439]
FP4_T = [0.29166667, 0.583333, 0.8333333, 0.4166667, 0.0859375, 0.20833333, 0.00260417]


def make(src):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).to(torch.float16)
    model.save_pretrained(src, safe_serialization=True)
    print("OK wrote", src)
    return 0


def check(src, out, kind):
    import torch
    import bitsandbytes as bnb
    import bitsandbytes.functional as F
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    problems = []
    original = {}
    for f in sorted(os.listdir(src)):
        if f.endswith(".safetensors"):
            original.update(load_file(os.path.join(src, f)))
    exported = {}
    for f in sorted(os.listdir(out)):
        if f.endswith(".safetensors"):
            exported.update(load_file(os.path.join(out, f)))
    with open(os.path.join(out, "config.json")) as fh:
        qc = json.load(fh)["quantization_config"]
    if qc.get("quant_method") != "bitsandbytes":
        problems.append(f"config.json quant_method is {qc.get('quant_method')!r}")

    model = AutoModelForCausalLM.from_pretrained(out, device_map="cpu", dtype=torch.float16)
    checked = 0
    nested_near_ties = [0]
    threshold_ties = [0]
    int8_near_ties = [0]
    for name, module in model.named_modules():
        w = name + ".weight"
        if isinstance(module, bnb.nn.Linear4bit):
            p = module.weight
            qs = p.quant_state
            if not torch.equal(p.data.cpu().view(torch.uint8).flatten(),
                               exported[w].view(torch.uint8).flatten()):
                problems.append(f"{w}: loaded 4-bit codes differ from the exported bytes")
            ref_w = original[w].to(torch.float16)
            packed, ref_state = F.quantize_4bit(ref_w, blocksize=qs.blocksize,
                                                quant_type=qs.quant_type,
                                                compress_statistics=qs.nested)
            if not torch.equal(packed.flatten(), exported[w].flatten()):
                # loadstar follows bnb's CUDA kernels; bnb's CPU backend differs in two
                # documented ways (tests/data/make_bnb_golden.py): FP4 tiny negatives get
                # +0 instead of -0, and values within ~1 ulp of a decision threshold may
                # fall on the other side. Any other difference is an error.
                n = ref_w.numel()
                def codes(p8):
                    p8 = p8.flatten().long()
                    return torch.stack([p8 >> 4, p8 & 15], 1).flatten()[:n]
                ours, theirs = codes(exported[w]), codes(packed)
                d = ours != theirs
                if qs.quant_type == "fp4":
                    d &= ~(((ours & 7) == 0) & ((theirs & 7) == 0))
                if d.any():
                    x = ref_w.float().flatten()
                    am = torch.nn.functional.pad(x.abs(), (0, (-n) % qs.blocksize)).view(
                        -1, qs.blocksize).amax(1)
                    xn = (x * (1.0 / am).repeat_interleave(qs.blocksize)[:n])[d]
                    t = torch.tensor(NF4_T if qs.quant_type == "nf4" else FP4_T)
                    ref = xn if qs.quant_type == "nf4" else xn.abs()
                    near = (ref[:, None] - t[None, :]).abs().min(1).values <= 1e-6
                    if not near.all():
                        problems.append(f"{w}: {int((~near).sum())} 4-bit codes differ from "
                                        "bnb's quantize_4bit away from a threshold")
                    threshold_ties[0] += int(d.sum())
            if qs.nested:
                # The nested absmax codes: bitsandbytes' CPU quantize_blockwise does not
                # always pick the nearest code of the dynamic map (loadstar, like the CUDA
                # kernel, does), so a differing code must be at least as near as bnb's.
                ours = exported[w + ".absmax"].flatten().long()
                theirs = ref_state.absmax.flatten().long()
                if not torch.equal(ref_state.state2.absmax.float(),
                                   exported[w + ".nested_absmax"].float()):
                    problems.append(f"{w}.nested_absmax differs from bnb's")
                if abs(ref_state.offset.item() - qs.offset.item()) != 0:
                    problems.append(f"{w}: nested offset {qs.offset.item()!r} != bnb's "
                                    f"{ref_state.offset.item()!r}")
                diff = (ours != theirs).nonzero().flatten()
                if diff.numel():
                    xa = torch.nn.functional.pad(ref_w.float().flatten().abs(),
                                                 (0, (-ref_w.numel()) % qs.blocksize))
                    am = xa.view(-1, qs.blocksize).amax(1)
                    code = ref_state.state2.code.float()
                    v = (am[diff] - ref_state.offset) / ref_state.state2.absmax[diff // 256]
                    worse = (code[ours[diff]] - v).abs() > (code[theirs[diff]] - v).abs()
                    if worse.any():
                        problems.append(f"{w}: {int(worse.sum())} nested absmax codes are "
                                        "farther than bnb's")
                    nested_near_ties[0] += diff.numel()
            elif torch.equal(packed.flatten(), exported[w].flatten()):
                deq = F.dequantize_4bit(p.data, qs).to(torch.float32)
                ref_deq = F.dequantize_4bit(packed, ref_state).to(torch.float32)
                if not torch.equal(deq, ref_deq):
                    problems.append(f"{w}: dequantized weight differs from bnb's own round trip")
            deq = F.dequantize_4bit(p.data, qs).to(torch.float32)
            # Error bound: half the largest gap of the 4-bit code book times the block's
            # absmax (plus the 8-bit absmax error with double quant).
            x = ref_w.to(torch.float32).flatten()
            bs = qs.blocksize
            pad = (-x.numel()) % bs
            blocks = torch.nn.functional.pad(x.abs(), (0, pad)).view(-1, bs).amax(1)
            bound = blocks.repeat_interleave(bs)[: x.numel()] * (0.5 if qs.quant_type == "fp4" else 0.15)
            bound = bound * (1.05 if qs.nested else 1.0) + 1e-3
            err = (deq.flatten() - x).abs()
            if (err > bound).any():
                problems.append(f"{w}: dequantization error {err.max().item():.4g} beyond the bound")
            checked += 1
        elif isinstance(module, bnb.nn.Linear8bitLt):
            p = module.weight
            if not torch.equal(p.data.cpu().flatten(), exported[w].flatten()):
                problems.append(f"{w}: loaded int8 weight differs from the exported bytes")
            scb = p.SCB if getattr(p, "SCB", None) is not None else module.state.SCB
            if not torch.equal(scb.cpu().float(), exported[name + ".SCB"].float()):
                problems.append(f"{name}.SCB: loaded SCB differs from the exported one")
            ref = F.int8_vectorwise_quant(original[w].to(torch.float16))
            cb, ref_scb = ref[0], ref[1]
            if not torch.equal(cb.flatten(), exported[w].flatten()):
                # bnb's CPU path rounds x * 127 / SCB computed in fp16; loadstar (as the
                # CUDA kernel) rounds the fp32 product, so near .5 the codes may differ by
                # one: ours must then be at least as near to the exact value.
                ours = exported[w].long()
                theirs = cb.long()
                exact = original[w].double() * 127.0 / ref_scb.double()[:, None]
                d = ours != theirs
                worse = ((ours - exact).abs() > (theirs - exact).abs() + 1e-9) & d
                if worse.any() or ((ours - theirs).abs() > 1).any():
                    problems.append(f"{w}: {int(worse.sum())} int8 values farther than bnb's")
                int8_near_ties[0] += int(d.sum())
            if not torch.equal(ref_scb.float(), exported[name + ".SCB"].float()):
                problems.append(f"{name}.SCB differs from bnb's int8_vectorwise_quant")
            deq = exported[w].float() * exported[name + ".SCB"].float()[:, None] / 127.0
            err = (deq - original[w].float()).abs()
            bound = exported[name + ".SCB"].float()[:, None] / 127.0 * 0.5 + 1e-3
            if (err > bound).any():
                problems.append(f"{w}: int8 dequantization error {err.max().item():.4g}")
            checked += 1
    if checked == 0:
        problems.append("transformers loaded no bitsandbytes layer")
    # lm_head stays unquantized (llm_int8_skip_modules default) and equals the original.
    if not torch.equal(model.lm_head.weight.data.cpu().to(torch.float16), original["lm_head.weight"]):
        problems.append("lm_head.weight differs from the original")
    ids = torch.arange(16).view(1, 16) % 256
    with torch.no_grad():
        logits = model(ids).logits.float()
    if not torch.isfinite(logits).all():
        problems.append("forward pass gave non-finite logits")
    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"OK {kind}: {checked} quantized layers match"
          + (f" ({nested_near_ties[0]} nested absmax codes nearer than bnb CPU's)"
             if nested_near_ties[0] else "")
          + (f" ({int8_near_ties[0]} int8 codes nearer than bnb CPU's)"
             if int8_near_ties[0] else "")
          + (f" ({threshold_ties[0]} 4-bit codes at a decision threshold)"
             if threshold_ties[0] else ""))
    return 0


def main(argv):
    if len(argv) >= 2 and argv[0] == "make":
        return make(argv[1])
    if len(argv) >= 4 and argv[0] == "check":
        return check(argv[1], argv[2], argv[3])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

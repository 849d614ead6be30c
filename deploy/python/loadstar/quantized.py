"""bitsandbytes layers on an instance's quantized tensors, without re-quantizing.

A quantized deployment serves each quantized Linear's weight as bitsandbytes' HF
serialization names it (SPEC §6): 4-bit `<m>.weight` (packed codes) with
`<m>.weight.absmax`, `.quant_map`, `.nested_absmax`, `.nested_quant_map` and
`.quant_state.bitsandbytes__<nf4|fp4>`; int8 `<m>.weight`, `<m>.SCB` and
`<m>.weight_format`. The modules and parameters are built exactly as transformers builds
them when it loads such a checkpoint (integrations/bitsandbytes.py: replace_with_bnb_linear
with pre_quantized=True, then Params4bit.from_prequantized / Int8Params with SCB), so the
attached model computes bit for bit what `from_pretrained(<store export>)` computes.
"""
from . import errors

FOUR_BIT_SUFFIXES = (".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map",
                     ".quant_state.bitsandbytes__nf4", ".quant_state.bitsandbytes__fp4")
INT8_COMPANIONS = ("SCB", "weight_format")


def quantized_modules(handle):
    """{module path: quant type} of the modules whose weight the handle holds quantized."""
    out = {}
    for t in handle.tensors:
        if t.HasField("quant") and t.quant.type and t.name.endswith(".weight"):
            out[t.name[:-len(".weight")]] = t.quant.type
    return out


def bnb_config(quantization):
    """transformers.BitsAndBytesConfig equivalent to a LoadSpec.quantization (for
    model.config, so the attached model describes itself as transformers' would)."""
    import transformers

    q = quantization
    if q.method == "int8":
        return transformers.BitsAndBytesConfig(
            load_in_8bit=True, llm_int8_threshold=q.llm_int8_threshold,
            llm_int8_skip_modules=list(q.skip_modules) or None)
    config = transformers.BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=q.method,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=q.compute_dtype or "float32",
        llm_int8_skip_modules=list(q.skip_modules) or None)
    if q.blocksize and q.blocksize != 64:
        # loadstar's extension, as `store export` writes it into config.json.
        config.bnb_4bit_blocksize = q.blocksize
    return config


def replace_linear_modules(model, modules, quantization):
    """Replaces each nn.Linear named in `modules` by the bitsandbytes layer transformers
    would create for it (on the meta device; weights come later)."""
    import bitsandbytes as bnb
    import torch

    compute_dtype = getattr(torch, quantization.compute_dtype or "float32")
    for name, qtype in modules.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise errors.Error(f"the instance quantizes {name}.weight but the model has no "
                               f"module {name}") from None
        if type(module) is not torch.nn.Linear:
            raise errors.Error(f"the instance quantizes {name}.weight but {name} is a "
                               f"{type(module).__name__}, not an nn.Linear")
        with torch.device("meta"):
            if qtype == "int8":
                new = bnb.nn.Linear8bitLt(module.in_features, module.out_features,
                                          module.bias is not None, has_fp16_weights=False,
                                          threshold=quantization.llm_int8_threshold)
                new.weight.data = new.weight.data.to(dtype=torch.int8)
            elif qtype in ("nf4", "fp4"):
                new = bnb.nn.Linear4bit(module.in_features, module.out_features,
                                        module.bias is not None, compute_dtype,
                                        compress_statistics=quantization.double_quant,
                                        quant_type=qtype, quant_storage=torch.uint8)
                new.weight.data = new.weight.data.to(dtype=torch.uint8)
            else:
                raise errors.Error(f"{name}.weight: unknown quantization {qtype!r}")
        new.source_cls = type(module)
        new.requires_grad_(False)
        model.set_submodule(name, new)


def bind_quantized_weights(model, modules, sd):
    """Sets each replaced module's weight from the served tensors; pops every tensor it
    consumed from `sd` so what is left are the plain parameters and buffers."""
    import bitsandbytes as bnb

    for name, qtype in modules.items():
        module = model.get_submodule(name)
        key = f"{name}.weight"
        if key not in sd:
            raise errors.Error(f"the instance has no tensor {key}")
        data = sd.pop(key)
        if qtype == "int8":
            scb = sd.pop(f"{name}.SCB", None)
            if scb is None:
                raise errors.Error(f"int8 weight {key} has no {name}.SCB in the instance")
            fmt = sd.pop(f"{name}.weight_format", None)
            if fmt is not None and int(fmt.reshape(-1)[0]) != 0:
                raise errors.Error(f"{name}.weight_format is {int(fmt.reshape(-1)[0])}; only "
                                   f"row-major (0) int8 weights can be served")
            kwargs = dict(module.weight.__dict__)
            kwargs["SCB"] = scb
            weight = bnb.nn.Int8Params(data, requires_grad=False, **kwargs).to(data.device)
        else:
            stats = {}
            for suffix in FOUR_BIT_SUFFIXES:
                t = sd.pop(key + suffix, None)
                if t is not None:
                    stats["weight" + suffix] = t
            if "weight.absmax" not in stats or "weight.quant_map" not in stats:
                raise errors.Error(f"4-bit weight {key} lacks its absmax / quant_map tensors")
            weight = bnb.nn.Params4bit.from_prequantized(
                data=data, quantized_stats=stats, requires_grad=False, device=data.device,
                module=module)
        module._is_hf_initialized = True
        setattr(module, "weight", weight)


def _repack_for_cpu(weight, quant_state, block_n=32):
    """What bitsandbytes' _convert_weight_packed_for_cpu makes of a 4-bit weight (its
    AVX512-BF16 CPU layout: 32-row blocks, nibbles regrouped; absmax as bf16, transposed),
    computed with uint8 operations instead of its int32 unpacking (about twice as fast)."""
    import bitsandbytes.functional as F
    import torch

    n, k = quant_state.shape
    half = block_n // 2
    # [row block, byte column j, row in block]; bnb pairs row r with row r + 16 of a block.
    p = weight.reshape(n // block_n, block_n, k // 2).transpose(1, 2)
    lo_rows, hi_rows = p[..., :half], p[..., half:]
    out = torch.empty((n // block_n, k // 2, half, 2), dtype=torch.uint8)
    torch.bitwise_or(hi_rows & 0xF0, lo_rows >> 4, out=out[..., 0])     # elements 2j
    torch.bitwise_or(hi_rows << 4, lo_rows & 0x0F, out=out[..., 1])     # elements 2j + 1
    packed = out.reshape(n, k // 2)
    quant_state.original_dtype = quant_state.dtype
    quant_state.original_nested = quant_state.nested
    quant_state.original_qshape = weight.shape
    absmax = quant_state.absmax
    if quant_state.nested:
        absmax = F.dequantize_blockwise(quant_state.absmax, quant_state.state2)
        absmax += quant_state.offset
        absmax = absmax.float()
        quant_state.nested = False
        delattr(quant_state, "state2")
    quant_state.absmax = absmax.reshape(n, k // quant_state.blocksize).T.to(torch.bfloat16).contiguous()
    quant_state.dtype = torch.bfloat16
    quant_state.packing_format_for_cpu = True
    return packed


def prepack_for_cpu(model):
    """Converts every CPU Linear4bit of `model` to bitsandbytes' CPU layout now, the way its
    first forward would (bitsandbytes does it lazily and slowly: most of an nf4 model's
    first token on CPUs with AVX512-BF16). The first layer is also converted by
    bitsandbytes itself and must come out bit-identical; otherwise nothing is changed and
    bitsandbytes converts lazily as usual. Returns the number of layers converted."""
    import copy

    import bitsandbytes as bnb
    import bitsandbytes.functional as F
    import torch

    convert = getattr(F, "_convert_weight_packed_for_cpu", None)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)
              and getattr(m, "support_avx512bf16_for_cpu", False)
              and m.weight.device.type == "cpu" and m.weight.dtype == torch.uint8
              and not getattr(m.weight.quant_state, "packing_format_for_cpu", False)
              and m.weight.quant_state.shape[0] % 32 == 0 and m.weight.quant_state.shape[1] % 2 == 0]
    if convert is None or not layers:
        return 0
    first = layers[0].weight
    theirs_w, theirs_qs = convert(first.data.clone(), copy.deepcopy(first.quant_state))
    mine_qs = copy.deepcopy(first.quant_state)
    mine_w = _repack_for_cpu(first.data, mine_qs)
    if not (torch.equal(mine_w, theirs_w) and torch.equal(mine_qs.absmax, theirs_qs.absmax)
            and sorted(vars(mine_qs)) == sorted(vars(theirs_qs))):
        return 0
    for m in layers:
        m.weight.data = _repack_for_cpu(m.weight.data, m.weight.quant_state)
    return len(layers)

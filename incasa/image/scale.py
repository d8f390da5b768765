"""Running the image DiT at the seed's scale: FP8 weights loaded block by block, regional compile, fastest attention.

The `8b` preset is 8.1B parameters: 16.2 GB in bf16, more than a 12 GB card holds. With float8 (e4m3) weights on
the token-wise linears of the blocks it is ~8.3 GB, so it fits, provided the bf16 model never exists whole. So
`load_dit` builds the network on the meta device (no memory), then materialises one piece at a time on the GPU —
an embedder, one block — fills it (from a checkpoint, or with random weights for benchmarks), casts it to bf16 and
converts that block's linears to FP8 before the next piece arrives. Peak memory while loading is the FP8 model plus
one bf16 block (~0.7 GB at width 3072), not the bf16 model.

FP8 inference uses torchao's Float8DynamicActivationFloat8WeightConfig: weights are stored in float8 with one scale
per output row (PerRow) or per tensor, and each activation is cast to float8 on the fly (dynamic scaling) before a
float8 x float8 -> bf16 GEMM (torch._scaled_mm). Every linear is converted except the two that touch pixels: the
patch embedding (img_in) and the output projection (final_out), where precision shows directly in the image. The
adaLN modulations are converted too, unlike in FP8 *training* (parallelize.py skips them there because torchao's
training path refuses their one-row-per-sample matmuls): they hold 2.1B of the 8.1B parameters, so in bf16 they
alone would cost 4.3 GB of a 12 GB card. GPU.md measured this treatment on a FLUX-sized model: 9.0 s / 8.9 GB for
five 1024^2 variants, 28 steps.

Then:
  InferenceDiT          float32 in and out for the sampler, bf16 / FP8 inside
  compile_blocks        torch.compile each repeated block (regional compile): identical blocks share one graph, so
                        warm-up costs two blocks, not forty, and the rest of the model stays eager
  fastest_sdpa_backend  time each scaled-dot-product-attention kernel on the model's real shapes and keep the
                        fastest that works (cuDNN, flash, memory-efficient); GPU.md: cuDNN failed in *backward* at
                        4 x 4,608 tokens, so inference checks it rather than assumes it
  cap_memory            hold the process to N GiB of the card (torch's allocator refuses more), so "fits in 12 GB"
                        is enforced, not hoped

Model code (dit.py) knows nothing of any of this (STYLE rule 2). A text mask of None (every token real) lets SDPA use
the flash kernels, which take no mask: batch the variants of one prompt, and no padding is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from incasa.image.dit import DiT, DiTConfig, DoubleStreamBlock, SingleStreamBlock
from incasa.train.parallelize import apply_regional_compile

BLOCKS = (DoubleStreamBlock, SingleStreamBlock)
FP8_GRANULARITIES = ("row", "tensor")
KEEP_PRECISE = ("img_in", "final_out")  # the linears that touch pixels stay in bf16


def _fp8_filter(module: nn.Module, fqn: str) -> bool:
    # the FP8 GEMM needs 16-aligned weight dimensions (rows of the activation may be anything, e.g. 5 samples)
    return isinstance(module, nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0


def _pieces(model: DiT) -> Iterator[tuple[str, nn.Module]]:
    """(prefix, module) for every top-level piece, with each block of a ModuleList as its own piece."""
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleList):
            for i, block in enumerate(child):
                yield f"{name}.{i}", block
        else:
            yield name, child


def _random_fill_(module: nn.Module, generator: torch.Generator) -> None:
    """Benchmark weights: N(0, 0.02) matrices (GPT-style, so 40 residual blocks stay finite in bf16), unit norms.

    Not the training init (dit.py's adaLN-Zero makes every block the identity at first, which would let a benchmark
    time multiplications by zero gates); speed does not depend on the values, only on their being ordinary numbers.
    """
    for name, p in module.named_parameters():
        with torch.no_grad():
            if p.ndim >= 2:
                p.normal_(0.0, 0.02, generator=generator)
            elif name.endswith("weight"):  # RMSNorm scales
                p.fill_(1.0)
            else:
                p.zero_()


def fp8_config(granularity: str = "row"):
    """torchao's FP8 inference config (float8 weights, dynamic float8 activations)."""
    if granularity not in FP8_GRANULARITIES:
        raise ValueError(f"unknown FP8 granularity {granularity!r}; choose one of {', '.join(FP8_GRANULARITIES)}")
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor
    except ImportError as e:
        raise RuntimeError("FP8 inference needs torchao: pip install 'incasa[gpu]'") from e
    return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow() if granularity == "row" else PerTensor())


def check_fp8_device(device: torch.device) -> None:
    if device.type != "cuda":
        raise RuntimeError("FP8 inference needs a CUDA GPU of compute capability 8.9+ (Ada, Hopper); "
                           f"the device is {device}")
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        raise RuntimeError(f"FP8 inference needs compute capability 8.9+; {torch.cuda.get_device_name(device)} "
                           f"has {major}.{minor}")


def load_dit(cfg: DiTConfig, *, weights: str | Path | None = None, device: str | torch.device = "cuda",
             dtype: torch.dtype = torch.bfloat16, fp8: str | None = "row", seed: int = 0,
             on_piece: Callable[[str], None] | None = None) -> DiT:
    """The DiT on `device`, built piece by piece so that peak memory is the final model plus one bf16 block.

    weights: a safetensors state dict of this config (an incasa image checkpoint's model.safetensors), read one
             piece at a time; None fills random benchmark weights (seeded).
    fp8:     "row" / "tensor" converts each piece's linears (all but KEEP_PRECISE) to float8 as soon as it is
             loaded; None keeps `dtype` everywhere (the CPU path, and the reference for parity).
    """
    device = torch.device(device)
    if fp8 is not None:
        check_fp8_device(device)
        from torchao.quantization import quantize_

        config = fp8_config(fp8)
    with torch.device("meta"):
        model = DiT(cfg)
    reader = None
    if weights is not None:
        from safetensors import safe_open

        reader = safe_open(str(weights), framework="pt", device="cpu")
        missing = {k for k, _ in model.named_parameters()} - set(reader.keys())
        if missing:
            raise ValueError(f"{weights} does not match the {cfg} config: missing {sorted(missing)[:3]} ...")
    generator = torch.Generator(device=device).manual_seed(seed)
    for prefix, piece in _pieces(model):
        piece.to_empty(device=device)
        if reader is not None:
            state = {name: reader.get_tensor(f"{prefix}.{name}") for name, _ in piece.named_parameters()}
            piece.load_state_dict(state, strict=True)
        else:
            _random_fill_(piece, generator)
        piece.to(dtype)
        if fp8 is not None and prefix not in KEEP_PRECISE:
            if isinstance(piece, nn.Linear):  # quantize_ converts children: wrap a bare linear
                holder = nn.Sequential(piece)
                quantize_(holder, config, filter_fn=_fp8_filter)
                setattr(model, prefix, holder[0])
            else:
                quantize_(piece, config, filter_fn=_fp8_filter)
        if on_piece is not None:
            on_piece(prefix)
    return model.eval().requires_grad_(False)


class InferenceDiT(nn.Module):
    """The sampler's view of a reduced-precision DiT: float32 in and out, `dtype` inside.

    flow.sample integrates in float32 (25 Euler steps in bf16 would round the picture away); this wrapper casts x,
    t and the text features to the model's dtype on the way in and the prediction back to float32 on the way out.
    A text mask with every token real becomes None, which lets SDPA use its flash kernels (they take no mask): the
    variants of one prompt without guidance, or any batch whose prompts tokenize to the same length.
    """

    def __init__(self, model: DiT, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype, self.cfg = model, dtype, model.cfg

    def forward(self, x_BCHW, t_B, txt_BLE, txt_mask_BL, pooled_BE):
        if txt_mask_BL is not None and bool(txt_mask_BL.all()):
            txt_mask_BL = None
        d = self.dtype
        return self.model(x_BCHW.to(d), t_B.to(d), txt_BLE.to(d), txt_mask_BL, pooled_BE.to(d)).float()


def compile_blocks(model: DiT, **compile_kwargs) -> DiT:
    """Regional torch.compile of the repeated blocks (parallelize.apply_regional_compile)."""
    return apply_regional_compile(model, BLOCKS, **compile_kwargs)


def cap_memory(gib: float, device: str | torch.device = "cuda") -> None:
    """Refuse allocations beyond `gib` GiB in this process (PyTorch's caching allocator enforces the fraction)."""
    device = torch.device(device)
    if device.index is None:  # set_per_process_memory_fraction wants an index, not plain "cuda"
        device = torch.device("cuda", torch.cuda.current_device())
    total = torch.cuda.get_device_properties(device).total_memory
    if gib * 2**30 > total:
        raise ValueError(f"cap of {gib} GiB exceeds the card's {total / 2**30:.1f} GiB")
    torch.cuda.set_per_process_memory_fraction(gib * 2**30 / total, device)
    # Loading piece by piece frees a bf16 piece after converting it, leaving holes the fixed-size segments of the
    # caching allocator cannot reuse: measured on an H200, loading the 8b preset under a 12 GiB cap ran out of memory
    # with 10.2 GiB allocated, while with expandable segments the whole load peaked at 8.6 GiB.
    try:
        torch.cuda.memory._set_allocator_settings("expandable_segments:True")
    except (AttributeError, RuntimeError):  # an older torch: PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
        pass


def fastest_sdpa_backend(batch: int, heads: int, seq: int, head_dim: int, *, device: str | torch.device = "cuda",
                         dtype: torch.dtype = torch.bfloat16, repeats: int = 5) -> tuple[object | None, dict]:
    """Time the SDPA kernels on q, k, v of this shape (no mask) and return (fastest working backend, {name: ms}).

    A backend that raises or returns non-finite values is reported with its error and skipped. On CPU there is
    nothing to choose (math / the CPU flash kernel): returns (None, {}).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention

    device = torch.device(device)
    if device.type != "cuda":
        return None, {}
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(batch, heads, seq, head_dim, device=device, dtype=dtype, generator=g) for _ in range(3))
    reference = None
    timings: dict[str, float | str] = {}
    candidates = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
                  "efficient": SDPBackend.EFFICIENT_ATTENTION}  # SDPBackend is a pybind enum: no name lookup
    for name, backend in candidates.items():
        try:
            with sdpa_kernel([backend]):
                out = scaled_dot_product_attention(q, k, v)  # warm-up (and the check below)
                torch.cuda.synchronize(device)
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(repeats):
                    scaled_dot_product_attention(q, k, v)
                end.record()
                torch.cuda.synchronize(device)
            if not torch.isfinite(out).all():
                raise RuntimeError("non-finite output")
            if reference is None:
                reference = out.float()
            elif (out.float() - reference).abs().max() > 5e-2:
                raise RuntimeError("disagrees with the other kernels")
            timings[name] = start.elapsed_time(end) / repeats
        except RuntimeError as e:  # not available for this shape / dtype / GPU, or failed
            timings[name] = f"failed: {str(e).splitlines()[0][:120]}"
    working = {n: t for n, t in timings.items() if isinstance(t, float)}
    if not working:
        return None, timings
    best = min(working, key=working.get)
    return candidates[best], timings


def timed(fn: Callable[[], object], device: str | torch.device = "cuda") -> tuple[object, float]:
    """(fn(), wall seconds), synchronising the GPU on both sides so queued work is counted."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0

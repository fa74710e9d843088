"""Wrappers of bundle.md on tiny random modules (fast).

    cd /work/main && PYTHONPATH=scripts/python /usr/bin/python3 -m unittest -v tests/python/test_wrappers.py
"""
import io
import json
import os
import struct
import sys
import tempfile
import types
import unittest

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "python"))

from ctok_py.default_models import nets as td  # noqa: E402
from ctok_py import wrappers as w  # noqa: E402

torch.set_num_threads(1)


def tiny_text(vocab=30, width=16, layers=2, heads=2, feat=8, seed=0):
    torch.manual_seed(seed)
    m = td.make_text_encoder(vocab, width=width, layers=layers, heads=heads, feature_dim=feat)
    return td.export_text_encoder(m)


class FakeHFLayer(nn.Module):
    """Mimics transformers' CLIPEncoderLayer call: returns a tuple, takes 4D masks."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, hidden_states, attention_mask, causal_attention_mask,
                output_attentions=False):
        assert attention_mask is None
        assert causal_attention_mask.dim() == 4
        assert causal_attention_mask.shape[0] == hidden_states.shape[0]
        return (self.block(hidden_states, causal_attention_mask),)


class TextWrapperTest(unittest.TestCase):
    def setUp(self):
        self.m = tiny_text().eval()
        self.ids = torch.tensor([[1, 5, 6, 7, 2, 0, 0, 0], [1, 9, 2, 0, 0, 0, 0, 0]])
        self.eos = torch.tensor([4, 2])

    def run_m(self, m, ids, eos):
        with torch.no_grad():
            return m(m.token_embedding[ids], eos)

    def test_shapes_and_attribute(self):
        h, f = self.run_m(self.m, self.ids, self.eos)
        self.assertEqual(tuple(h.shape), (2, 8, 16))
        self.assertEqual(tuple(f.shape), (2, 8))
        self.assertEqual(tuple(self.m.token_embedding.shape), (30, 16))
        self.assertNotIn("token_embedding", dict(self.m.named_parameters()))

    def test_pools_at_given_index(self):
        h, f = self.run_m(self.m, self.ids, self.eos)
        expect = self.m.projection(h[torch.arange(2), self.eos])
        torch.testing.assert_close(f, expect)
        # tokens after eos (ids above eos, as custom tokens are) change nothing pooled
        ids2 = self.ids.clone()
        ids2[:, 5:] = 29
        h2, f2 = self.run_m(self.m, ids2, self.eos)
        torch.testing.assert_close(f2, f)
        torch.testing.assert_close(h2[0, :5], h[0, :5])
        # another eos index gives other features
        _, f3 = self.run_m(self.m, self.ids, torch.tensor([3, 2]))
        self.assertGreater((f3[0] - f[0]).abs().max().item(), 1e-4)
        torch.testing.assert_close(f3[1], f[1])

    def test_causal(self):
        h, _ = self.run_m(self.m, self.ids, self.eos)
        ids2 = self.ids.clone()
        ids2[0, 3] = 11
        h2, _ = self.run_m(self.m, ids2, self.eos)
        torch.testing.assert_close(h2[0, :3], h[0, :3])
        self.assertGreater((h2[0, 3:] - h[0, 3:]).abs().max().item(), 1e-4)

    def test_script_and_trace_match_eager(self):
        h, f = self.run_m(self.m, self.ids, self.eos)
        s = torch.jit.script(self.m)
        buf = io.BytesIO()
        torch.jit.save(s, buf)
        buf.seek(0)
        s = torch.jit.load(buf)
        hs, fs = self.run_m(s, self.ids, self.eos)
        torch.testing.assert_close(hs, h)
        torch.testing.assert_close(fs, f)
        emb = self.m.token_embedding[self.ids]
        t = torch.jit.trace(self.m, (emb, self.eos))
        ht, ft = t(emb, torch.tensor([3, 1]))  # traced index is an input, not a constant
        he, fe = self.m(emb, torch.tensor([3, 1]))
        torch.testing.assert_close(ft, fe)

    def test_shared_logic_with_hf_style_layers(self):
        """The same wrapper over HF-style layers (adapter) gives the same numbers."""
        m = self.m
        hf_text = types.SimpleNamespace(
            embeddings=types.SimpleNamespace(
                token_embedding=types.SimpleNamespace(weight=m.token_embedding),
                position_embedding=types.SimpleNamespace(weight=m.position_embedding)),
            encoder=types.SimpleNamespace(layers=[FakeHFLayer(b) for b in m.blocks]),
            final_layer_norm=m.final_ln)
        hf = w.text_wrapper_from_hf(hf_text, m.projection).eval()
        self.assertTrue(all(isinstance(b, w.HFCLIPLayerAdapter) and b.has_causal_arg
                            for b in hf.blocks))
        h, f = self.run_m(m, self.ids, self.eos)
        h2, f2 = self.run_m(hf, self.ids, self.eos)
        torch.testing.assert_close(h2, h)
        torch.testing.assert_close(f2, f)
        emb = m.token_embedding[self.ids]
        traced = torch.jit.trace(hf, (emb, self.eos))
        h3, f3 = traced(emb, self.eos)
        torch.testing.assert_close(f3, f)

    def test_causal_mask(self):
        mk = w.causal_mask(4, torch.float32, torch.device("cpu"))
        self.assertEqual(tuple(mk.shape), (1, 1, 4, 4))
        self.assertEqual(mk[0, 0, 1, 1].item(), 0.0)
        self.assertEqual(mk[0, 0, 2, 0].item(), 0.0)
        self.assertEqual(mk[0, 0, 1, 2].item(), float("-inf"))


class OtherWrappersTest(unittest.TestCase):
    def test_image_unet_vae(self):
        torch.manual_seed(0)
        img = td.make_image_encoder(feature_dim=8, widths=(4, 8, 8, 8)).eval()
        x = torch.randn(2, 3, 32, 32)
        s = torch.jit.script(img)
        torch.testing.assert_close(s(x), img(x))
        self.assertEqual(tuple(s(x).shape), (2, 8))

        unet = td.LatentUNet(ch=(8, 16), context_width=12, temb=16).eval()
        uw = torch.jit.script(w.UNetWrapper(unet))
        z = torch.randn(2, 4, 8, 8)
        t = torch.tensor([3, 900])
        c = torch.randn(2, 5, 12)
        out = uw(z, t, c)
        self.assertEqual(tuple(out.shape), (2, 4, 8, 8))
        torch.testing.assert_close(out, unet(z, t, c))
        self.assertGreater((uw(z, t, torch.randn(2, 5, 12)) - out).abs().max().item(), 1e-6)

        enc, dec = td.VaeEncoder(ch=4).eval(), td.VaeDecoder(ch=4).eval()
        ew = torch.jit.script(w.VaeEncoderWrapper(enc, 0.5))
        dw = torch.jit.script(w.VaeDecoderWrapper(dec, 0.5))
        lat = ew(x.clamp(-1, 1))
        torch.testing.assert_close(lat, enc(x.clamp(-1, 1)) * 0.5)
        torch.testing.assert_close(dw(lat), dec(enc(x.clamp(-1, 1))))

    def test_diffusers_style_adapters(self):
        class FakeUNet(nn.Module):
            def forward(self, sample, timestep, encoder_hidden_states=None, return_dict=True):
                return (sample * 2 + timestep.float()[:, None, None, None]
                        + encoder_hidden_states.mean(),)

        uw = w.UNetWrapper(w.DiffusersUNetAdapter(FakeUNet()))
        z = torch.randn(1, 4, 2, 2)
        c = torch.randn(1, 3, 5)
        torch.testing.assert_close(uw(z, torch.tensor([7]), c), z * 2 + 7 + c.mean())

        class FakeVae(nn.Module):
            def __init__(self):
                super().__init__()
                self.config = types.SimpleNamespace(latent_channels=2)
                self.encoder = nn.Conv2d(3, 4, 1)
                self.quant_conv = nn.Conv2d(4, 4, 1)
                self.post_quant_conv = nn.Conv2d(2, 2, 1)
                self.decoder = nn.Conv2d(2, 3, 1)

        v = FakeVae()
        x = torch.randn(1, 3, 4, 4)
        e = w.VaeEncoderWrapper(w.DiffusersVaeMean(v), 0.18215)
        d = w.VaeDecoderWrapper(w.DiffusersVaeDecode(v), 0.18215)
        with torch.no_grad():
            lat = e(x)
            torch.testing.assert_close(lat, v.quant_conv(v.encoder(x))[:, :2] * 0.18215)
            torch.testing.assert_close(d(lat), v.decoder(v.post_quant_conv(lat / 0.18215)))


class SafetensorsTest(unittest.TestCase):
    def test_roundtrip_and_layout(self):
        t = {"a.f": torch.randn(2, 3), "b.i": torch.tensor([1, -2], dtype=torch.int64),
             "c.u": torch.arange(6, dtype=torch.uint8).reshape(1, 2, 3)}
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "x.safetensors")
            w.save_safetensors(p, t, {"text.prompts": json.dumps(["a", ""])})
            with open(p, "rb") as f:
                raw = f.read()
            (n,) = struct.unpack("<Q", raw[:8])
            self.assertEqual(n % 8, 0)
            header = json.loads(raw[8:8 + n])
            self.assertEqual(header["b.i"]["dtype"], "I64")
            self.assertEqual(header["c.u"]["dtype"], "U8")
            self.assertEqual(json.loads(header["__metadata__"]["text.prompts"]), ["a", ""])
            end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
            self.assertEqual(len(raw), 8 + n + end)
            back, meta = w.load_safetensors(p)
        for k in t:
            self.assertTrue(torch.equal(back[k], t[k]), k)
        self.assertIn("text.prompts", meta)


class ExportSdSmokeTest(unittest.TestCase):
    """export_sd.export on fake modules with the transformers/diffusers attribute layout."""

    def test_export_with_fake_hf_modules(self):
        from ctok_py import export_sd
        torch.manual_seed(0)
        width = 8
        small = td.make_text_encoder(49408, width=width, layers=1, heads=2, feature_dim=6,
                                     context_length=77)
        text_model = types.SimpleNamespace(
            embeddings=types.SimpleNamespace(
                token_embedding=types.SimpleNamespace(weight=small.token_embedding.data),
                position_embedding=types.SimpleNamespace(weight=small.position_embedding.data)),
            encoder=types.SimpleNamespace(layers=[FakeHFLayer(b) for b in small.blocks]),
            final_layer_norm=small.final_ln)

        class FakeVision(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 5, 32, 32)

            def forward(self, pixel_values=None, return_dict=True):
                h = self.conv(pixel_values)
                return (h, h.mean(dim=(2, 3)))

        class FakeUNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(4, 4, 3, padding=1)
                self.ctx = nn.Linear(width, 4)

            def forward(self, sample, timestep, encoder_hidden_states=None, return_dict=True):
                c = self.ctx(encoder_hidden_states).mean(1)[:, :, None, None]
                return (self.conv(sample) + c + timestep.float()[:, None, None, None] / 1000,)

        class FakeVae(nn.Module):
            def __init__(self):
                super().__init__()
                self.config = types.SimpleNamespace(latent_channels=4,
                                                    block_out_channels=[1, 1, 1, 1])
                self.encoder = nn.Conv2d(3, 8, 8, 8)
                self.quant_conv = nn.Conv2d(8, 8, 1)
                self.post_quant_conv = nn.Conv2d(4, 4, 1)
                self.decoder = nn.ConvTranspose2d(4, 3, 8, 8)

        def tokenize(p):
            return [49406] + [300 + len(x) for x in p.split()] + [49407]

        with tempfile.TemporaryDirectory() as d:
            bpe = os.path.join(d, "src.gz")
            import gzip
            with gzip.open(bpe, "wb") as f:
                f.write(b"#version: 0.2\ni n\n")
            out = os.path.join(d, "b")
            m = export_sd.export(text_model, nn.Linear(width, 6, bias=False), FakeVision(),
                                 nn.Linear(5, 6, bias=False), 100.0, FakeUNet(), FakeVae(),
                                 0.18215, {"prediction_type": "epsilon"}, tokenize, bpe, out,
                                 "fake-sd", {"how": "test"}, image_size=512)
            self.assertEqual(m["tokenizer"]["type"], "clip-bpe")
            self.assertEqual(m["text"]["pad_id"], 49407)
            self.assertEqual(m["diffusion"]["latent_size"], 64)
            self.assertEqual(m["image"]["size"], 224)
            ref, meta = w.load_safetensors(os.path.join(out, "reference.safetensors"))
            te = torch.jit.load(os.path.join(out, "text_encoder.pt"))
            h, f = te(ref["text.embeds"], ref["text.eos_index"])
            torch.testing.assert_close(f, ref["text.features"])
            self.assertEqual(tuple(ref["text.input_ids"].shape), (3, 77))
            self.assertEqual(int(ref["text.input_ids"][1, 2]), 49407)  # padded with eos
            un = torch.jit.load(os.path.join(out, "unet.pt"))
            torch.testing.assert_close(un(ref["unet.sample"], ref["unet.timestep"],
                                          ref["unet.context"]), ref["unet.out"])
            self.assertTrue(os.path.exists(os.path.join(out, "bpe_simple_vocab_16e6.txt.gz")))


if __name__ == "__main__":
    unittest.main()

"""The shipped bundles keep the contract of bundle.md.

Checks models/default (skipped while it is not exported) and tests/data/tiny_bundle:
manifest keys and files, sha256, sizes; the TorchScript files reproduce
reference.safetensors; the text encoder pools at the eos index it is given.

    cd /work/main && PYTHONPATH=scripts/python /usr/bin/python3 -m unittest -v tests/python/test_default_bundle.py
"""
import hashlib
import json
import os
import sys
import unittest

import numpy as np
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts", "python"))

from ctok_py import wrappers as w  # noqa: E402

torch.set_num_threads(2)

BUNDLES = {"default": os.path.join(ROOT, "models", "default"),
           "tiny": os.path.join(ROOT, "tests", "data", "tiny_bundle")}
REFERENCE_KEYS = ["text.input_ids", "text.eos_index", "text.embeds", "text.hidden",
                  "text.features", "image.pixels", "image.features", "unet.sample",
                  "unet.timestep", "unet.context", "unet.out", "vae.images", "vae.latents",
                  "vae.decoded", "preprocess.raw", "preprocess.pixels"]


def close(test, got, want, tol=1e-5, what=""):
    err = (got.double() - want.double()).abs().max().item() if got.numel() else 0.0
    scale = max(1.0, want.double().abs().max().item())
    test.assertEqual(tuple(got.shape), tuple(want.shape), what)
    test.assertLessEqual(err, tol * scale, f"{what}: max abs error {err}")


class BundleChecks:
    name = ""

    @classmethod
    def setUpClass(cls):
        cls.dir = BUNDLES[cls.name]
        if not os.path.exists(os.path.join(cls.dir, "bundle.json")):
            raise unittest.SkipTest(f"{cls.dir} has no bundle.json yet")
        with open(os.path.join(cls.dir, "bundle.json")) as f:
            cls.m = json.load(f)
        cls.ref, cls.meta = w.load_safetensors(os.path.join(cls.dir, "reference.safetensors"))
        cls.mods = {}

    def mod(self, key):
        if key not in self.mods:
            self.mods[key] = torch.jit.load(os.path.join(self.dir, key)).eval()
        return self.mods[key]

    def test_manifest(self):
        m = self.m
        self.assertEqual(m["format"], "ctok-bundle")
        self.assertEqual(m["version"], 1)
        for k in ("name", "tokenizer", "text", "image", "logit_scale", "diffusion", "sha256",
                  "card"):
            self.assertIn(k, m)
        self.assertEqual(m["tokenizer"]["type"], "sentencepiece")
        for k in ("file", "context_length", "width", "feature_dim", "vocab_size", "bos_id",
                  "eos_id", "pad_id"):
            self.assertIn(k, m["text"])
        self.assertEqual((m["text"]["pad_id"], m["text"]["bos_id"], m["text"]["eos_id"]),
                         (0, 1, 2))
        for k in ("file", "size", "resize", "crop", "mean", "std", "feature_dim"):
            self.assertIn(k, m["image"])
        d = m["diffusion"]
        for k in ("unet", "vae_encoder", "vae_decoder", "image_size", "latent_channels",
                  "latent_size", "latent_scale", "num_train_timesteps", "beta_schedule",
                  "beta_start", "beta_end", "prediction"):
            self.assertIn(k, d)
        self.assertEqual(d["beta_schedule"], "scaled_linear")
        self.assertEqual(d["prediction"], "epsilon")
        self.assertGreater(m["logit_scale"], 0)

    def test_files_and_sha256(self):
        m = self.m
        files = [m["tokenizer"]["file"], m["text"]["file"], m["image"]["file"],
                 m["diffusion"]["unet"], m["diffusion"]["vae_encoder"],
                 m["diffusion"]["vae_decoder"], "reference.safetensors"]
        for f in files:
            p = os.path.join(self.dir, f)
            self.assertTrue(os.path.isfile(p), p)
            self.assertIn(f, m["sha256"])
        for f, digest in m["sha256"].items():
            with open(os.path.join(self.dir, f), "rb") as fh:
                self.assertEqual(hashlib.sha256(fh.read()).hexdigest(), digest, f)
        total = sum(os.path.getsize(os.path.join(self.dir, f)) for f in os.listdir(self.dir))
        self.assertLess(total, self.max_bytes)

    def test_reference_keys_and_shapes(self):
        r, m = self.ref, self.m
        for k in REFERENCE_KEYS:
            self.assertIn(k, r)
        t = m["text"]
        b, length = r["text.input_ids"].shape
        self.assertEqual(length, t["context_length"])
        self.assertEqual(r["text.input_ids"].dtype, torch.int64)
        self.assertEqual(r["text.eos_index"].dtype, torch.int64)
        self.assertEqual(r["unet.timestep"].dtype, torch.int64)
        self.assertEqual(r["preprocess.raw"].dtype, torch.uint8)
        self.assertEqual(tuple(r["text.hidden"].shape), (b, length, t["width"]))
        self.assertEqual(tuple(r["text.features"].shape), (b, t["feature_dim"]))
        s = m["image"]["size"]
        self.assertEqual(tuple(r["image.pixels"].shape[1:]), (3, s, s))
        self.assertEqual(r["image.features"].shape[1], m["image"]["feature_dim"])
        self.assertEqual(tuple(r["preprocess.pixels"].shape), (3, s, s))
        raw = r["preprocess.raw"]
        self.assertNotEqual(raw.shape[0], raw.shape[1])
        prompts = json.loads(self.meta["text.prompts"])
        self.assertEqual(len(prompts), b)
        ids = r["text.input_ids"]
        for i in range(b):
            e = int(r["text.eos_index"][i])
            self.assertEqual(int(ids[i, 0]), t["bos_id"])
            self.assertEqual(int(ids[i, e]), t["eos_id"])
            self.assertTrue(bool((ids[i, e + 1:] == t["pad_id"]).all()))
        # one prompt has an id above eos before eos, so argmax pooling would be wrong
        self.assertTrue(any(int(ids[i].argmax()) != int(r["text.eos_index"][i]) for i in range(b)))

    def test_tokenizer_reproduces_input_ids(self):
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=os.path.join(self.dir, self.m["tokenizer"]["file"]))
        self.assertEqual(sp.get_piece_size(), self.m["text"]["vocab_size"])
        self.assertEqual((sp.pad_id(), sp.bos_id(), sp.eos_id()), (0, 1, 2))
        for i, p in enumerate(json.loads(self.meta["text.prompts"])):
            seq = [1] + (sp.encode(p) if p else []) + [2]
            self.assertEqual(self.ref["text.input_ids"][i, :len(seq)].tolist(), seq, p)

    def test_text_reproduces_reference(self):
        te = self.mod(self.m["text"]["file"])
        emb = te.token_embedding
        self.assertEqual(tuple(emb.shape), (self.m["text"]["vocab_size"], self.m["text"]["width"]))
        r = self.ref
        close(self, emb[r["text.input_ids"]], r["text.embeds"], 0, "embeds")
        with torch.no_grad():
            h, f = te(r["text.embeds"], r["text.eos_index"])
        close(self, h, r["text.hidden"], 1e-5, "hidden")
        close(self, f, r["text.features"], 1e-5, "features")

    def test_text_pools_at_eos_index(self):
        te = self.mod(self.m["text"]["file"])
        r = self.ref
        ids, eos = r["text.input_ids"].clone(), r["text.eos_index"]
        i = int(eos.argmin())
        ids2 = ids.clone()
        ids2[i, eos[i] + 1:] = self.m["text"]["vocab_size"] - 1  # tokens after eos
        with torch.no_grad():
            _, f = te(te.token_embedding[ids], eos)
            _, f2 = te(te.token_embedding[ids2], eos)
            eos3 = eos.clone()
            eos3[i] = eos[i] + 1
            _, f3 = te(te.token_embedding[ids2], eos3)
        close(self, f2, f, 1e-6, "tokens after eos")
        self.assertGreater((f3[i] - f[i]).abs().max().item(), 1e-4)

    def test_image_reproduces_reference(self):
        with torch.no_grad():
            f = self.mod(self.m["image"]["file"])(self.ref["image.pixels"])
        close(self, f, self.ref["image.features"], 1e-5, "image features")

    def test_unet_reproduces_reference(self):
        r = self.ref
        with torch.no_grad():
            out = self.mod(self.m["diffusion"]["unet"])(r["unet.sample"], r["unet.timestep"],
                                                        r["unet.context"])
        close(self, out, r["unet.out"], 1e-5, "unet")
        close(self, r["unet.context"], r["text.hidden"][: r["unet.context"].shape[0]], 0, "ctx")

    def test_vae_reproduces_reference(self):
        r = self.ref
        with torch.no_grad():
            lat = self.mod(self.m["diffusion"]["vae_encoder"])(r["vae.images"])
            dec = self.mod(self.m["diffusion"]["vae_decoder"])(r["vae.latents"])
        d = self.m["diffusion"]
        self.assertEqual(tuple(lat.shape[1:]), (d["latent_channels"], d["latent_size"],
                                                d["latent_size"]))
        self.assertGreaterEqual(float(r["vae.images"].min()), -1.0)
        self.assertLessEqual(float(r["vae.images"].max()), 1.0)
        close(self, lat, r["vae.latents"], 1e-5, "vae latents")
        close(self, dec, r["vae.decoded"], 1e-5, "vae decoded")

    def test_preprocess_reference(self):
        from PIL import Image
        from ctok_py.default_models.data import preprocess_pil
        raw = self.ref["preprocess.raw"].numpy()
        s = self.m["image"]["size"]
        u8 = preprocess_pil(Image.fromarray(raw), s).astype(np.float32) / 255.0
        mean = np.array(self.m["image"]["mean"], np.float32)
        std = np.array(self.m["image"]["std"], np.float32)
        want = torch.from_numpy(((u8 - mean) / std).transpose(2, 0, 1).copy())
        close(self, self.ref["preprocess.pixels"], want, 1e-6, "preprocess")


class DefaultBundleTest(BundleChecks, unittest.TestCase):
    name = "default"
    max_bytes = 40 * 2 ** 20

    def test_card_metrics(self):
        card = self.m["card"]
        for k in ("source", "seed", "options", "metrics"):
            self.assertIn(k, card)
        self.assertEqual(self.m["name"], "fashionworld-default")
        self.assertEqual(self.m["text"]["context_length"], 16)
        self.assertEqual(self.m["image"]["size"], 32)


class TinyBundleTest(BundleChecks, unittest.TestCase):
    name = "tiny"
    max_bytes = 2 ** 20


if __name__ == "__main__":
    unittest.main()

"""Tests of the small Python tools: ctok_py.portable (checkpoints across torch versions)
and ctok_py.concept_images (a folder of photos of a concept).

Run: PYTHONPATH=scripts/python /usr/bin/python3 -m unittest -v tests/python/test_py_tools.py
"""
import contextlib
import io
import json
import os
import shutil
import tempfile
import unittest

import torch
from PIL import Image

from ctok_py import concept_images, portable
from ctok_py import fashionworld as fw


class PortableTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="portable_test_")

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def test_round_trip_nested_checkpoint(self):
        bn = torch.nn.BatchNorm2d(3)  # has a 0-dim int64 num_batches_tracked
        obj = {"text": {"w": torch.randn(4, 5), "ids": torch.arange(6)},
               "bn": bn.state_dict(), "half": torch.randn(3).half(),
               "logit_scale": 29.5, "feature_dim": 128, "name": "x", "flags": [1, 2]}
        src, st, dst = (os.path.join(self.tmp, n) for n in ("a.pt", "a.safetensors", "b.pt"))
        torch.save(obj, src)
        portable.pack(src, st)
        portable.unpack(st, dst)
        back = torch.load(dst)
        self.assertEqual(set(back), set(obj))
        self.assertTrue(torch.equal(back["text"]["w"], obj["text"]["w"]))
        self.assertTrue(torch.equal(back["text"]["ids"], obj["text"]["ids"]))
        self.assertEqual(back["half"].dtype, torch.float16)
        self.assertEqual(back["bn"]["num_batches_tracked"].shape, torch.Size([]))
        self.assertEqual(back["logit_scale"], 29.5)
        self.assertEqual(back["flags"], [1, 2])
        torch.nn.BatchNorm2d(3).load_state_dict(back["bn"])  # loads as a state dict

    def test_unpack_refuses_other_safetensors(self):
        from ctok_py.wrappers import save_safetensors
        st = os.path.join(self.tmp, "plain.safetensors")
        save_safetensors(st, {"x": torch.zeros(2)})
        with self.assertRaises(ValueError):
            portable.unpack(st, os.path.join(self.tmp, "out.pt"))

    def test_key_with_separator_refused(self):
        src = os.path.join(self.tmp, "bad.pt")
        torch.save({"a/b": torch.zeros(1)}, src)
        with self.assertRaises(ValueError):
            portable.pack(src, os.path.join(self.tmp, "bad.safetensors"))


class SampleBatchTest(unittest.TestCase):
    """default_models.training.sample_batch: colour-grouped CLIP batches."""

    def test_grouped_batches_hold_two_colours(self):
        from ctok_py.default_models.training import sample_batch
        colour = torch.arange(1000) % 10
        usable = torch.arange(1000)
        by_colour = [usable[colour == c] for c in range(10)]
        gen = torch.Generator().manual_seed(0)
        for _ in range(20):
            idx = sample_batch(usable, by_colour, 64, 1.0, gen)
            self.assertEqual(len(idx), 64)
            self.assertEqual(len(set(colour[idx].tolist())), 2)
        seen = set()
        for _ in range(20):
            seen |= set(colour[sample_batch(usable, by_colour, 64, 0.0, gen)].tolist())
        self.assertEqual(len(seen), 10)  # rate 0: uniform batches over every colour


class ConceptImagesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="concept_images_test_")
        cls.root = os.path.join(cls.tmp, "world")
        with contextlib.redirect_stdout(io.StringIO()):
            fw.generate(["--out", cls.root, "--seed", "0", "--train-ids", "60",
                         "--val-ids", "2", "--workers", "1"])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def run_tool(self, *args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = concept_images.main(list(args))
            except SystemExit as e:
                rc = e.code
        return rc, out.getvalue(), err.getvalue()

    def test_category_distinct_identities(self):
        out = os.path.join(self.tmp, "bags")
        rc, text, _ = self.run_tool("--root", self.root, "--category", "bag", "--n", "3",
                                    "--out", out)
        self.assertEqual(rc, 0)
        files = sorted(os.listdir(out))
        self.assertEqual(len(files), 3)
        idents = set()
        for f in files:
            stem, item = f[:-4].split("-")
            with open(os.path.join(self.root, "train", "annos", stem + ".json")) as fh:
                anno = json.load(fh)
            self.assertEqual(anno["source"], "user")
            it = anno[item]
            self.assertEqual(it["category_name"], "bag")
            idents.add((anno["pair_id"], it["style"]))
            with Image.open(os.path.join(out, f)) as im:
                x1, y1, x2, y2 = it["bounding_box"]
                self.assertGreaterEqual(im.width, x2 - x1)   # the box plus a margin
                self.assertLessEqual(im.width, 64)
        self.assertEqual(len(idents), 3)
        self.assertFalse(os.path.exists(out + ".tmp"))

    def test_same_seed_same_choice(self):
        a, b = os.path.join(self.tmp, "s1"), os.path.join(self.tmp, "s2")
        self.run_tool("--root", self.root, "--category", "dress", "--n", "2", "--out", a)
        self.run_tool("--root", self.root, "--category", "dress", "--n", "2", "--out", b)
        self.assertEqual(sorted(os.listdir(a)), sorted(os.listdir(b)))

    def test_errors_exit_2_and_write_nothing(self):
        out = os.path.join(self.tmp, "none")
        rc, _, err = self.run_tool("--root", self.root, "--category", "bag", "--n", "10000",
                                   "--out", out)
        self.assertEqual(rc, 2)
        self.assertIn("only", err)
        self.assertFalse(os.path.exists(out))
        rc, _, err = self.run_tool("--root", os.path.join(self.tmp, "missing"),
                                   "--category", "bag", "--out", out)
        self.assertEqual(rc, 2)
        self.assertIn("--root", err)
        os.makedirs(out)
        rc, _, err = self.run_tool("--root", self.root, "--category", "bag", "--out", out)
        self.assertEqual(rc, 2)
        self.assertIn("exists", err)


if __name__ == "__main__":
    unittest.main()

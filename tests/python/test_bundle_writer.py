"""ctok_py.bundle_writer: atomic bundle folders, and the fixture written through it.

Run: PYTHONPATH=scripts/python /usr/bin/python3 -m unittest -v tests/python/test_bundle_writer.py
"""
import json
import os
import shutil
import sys
import tempfile
import unittest
from unittest import mock

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "python"))

from ctok_py import bundle_writer  # noqa: E402

torch.set_num_threads(1)
FIXTURE = os.path.join(os.path.dirname(__file__), "..", "data", "tiny_bundle")


class Boom(RuntimeError):
    pass


def key_tree(obj):
    """The manifest's structure: keys in order, recursively (values left out)."""
    if isinstance(obj, dict):
        return [(k, key_tree(v)) for k, v in obj.items()]
    return type(obj).__name__


class StagedTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="bundle_writer_test_")
        self.out = os.path.join(self.root, "bundle")

    def tearDown(self):
        shutil.rmtree(self.root)

    def _write(self, folder, text="x"):
        with open(os.path.join(folder, "a.pt"), "w") as f:
            f.write(text)
        return bundle_writer.write_manifest(
            folder, {"format": "ctok-bundle", "sha256": {}, "card": {}}, ["a.pt"])

    def test_success_renames_into_place(self):
        with bundle_writer.staged(self.out) as tmp:
            self.assertNotEqual(os.path.abspath(tmp), os.path.abspath(self.out))
            self.assertEqual(os.path.dirname(tmp), self.root)  # beside the target
            m = self._write(tmp)
        self.assertEqual(sorted(os.listdir(self.out)), ["a.pt", "bundle.json"])
        self.assertEqual(os.listdir(self.root), ["bundle"])
        with open(os.path.join(self.out, "bundle.json")) as f:
            text = f.read()
        self.assertTrue(text.endswith("}\n"))
        self.assertEqual(json.loads(text), m)
        self.assertEqual(list(m), ["format", "sha256", "card"])  # sha256 keeps its place
        self.assertEqual(m["sha256"]["a.pt"],
                         bundle_writer.sha256_file(os.path.join(self.out, "a.pt")))

    def test_failure_half_way_leaves_nothing(self):
        with self.assertRaises(Boom):
            with bundle_writer.staged(self.out) as tmp:
                with open(os.path.join(tmp, "a.pt"), "w") as f:
                    f.write("half")
                raise Boom("interrupted")
        self.assertFalse(os.path.exists(self.out))
        self.assertEqual(os.listdir(self.root), [])  # no temporary folder left behind

    def test_failure_keeps_the_existing_bundle(self):
        with bundle_writer.staged(self.out) as tmp:
            self._write(tmp, "old")
        with self.assertRaises(Boom):
            with bundle_writer.staged(self.out) as tmp:
                self._write(tmp, "new")
                raise Boom("interrupted")
        with open(os.path.join(self.out, "a.pt")) as f:
            self.assertEqual(f.read(), "old")
        self.assertEqual(os.listdir(self.root), ["bundle"])

    def test_replaces_an_existing_bundle_whole(self):
        os.makedirs(self.out)
        with open(os.path.join(self.out, "stale.pt"), "w") as f:
            f.write("stale")
        with bundle_writer.staged(self.out) as tmp:
            self._write(tmp, "new")
        self.assertEqual(sorted(os.listdir(self.out)), ["a.pt", "bundle.json"])
        self.assertEqual(os.listdir(self.root), ["bundle"])

    def test_no_manifest_no_bundle(self):
        with self.assertRaises(RuntimeError):
            with bundle_writer.staged(self.out) as tmp:
                with open(os.path.join(tmp, "a.pt"), "w") as f:
                    f.write("x")
        self.assertEqual(os.listdir(self.root), [])


class FixtureThroughWriterTest(unittest.TestCase):
    """make_fixture_bundle through the writer: same manifest layout and file set as the
    committed tests/data/tiny_bundle (TorchScript archives are not byte-reproducible, so
    bytes are not compared), and a failure half-way leaves no folder."""

    @classmethod
    def setUpClass(cls):
        from ctok_py import make_fixture_bundle
        cls.mfb = make_fixture_bundle
        cls.root = tempfile.mkdtemp(prefix="fixture_writer_test_")
        cls.out = os.path.join(cls.root, "tiny_bundle")
        cls.manifest = make_fixture_bundle.build(cls.out, seed=0)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root)

    def test_same_structure_as_committed_fixture(self):
        with open(os.path.join(FIXTURE, "bundle.json")) as f:
            committed = json.load(f)
        with open(os.path.join(self.out, "bundle.json")) as f:
            written = json.load(f)
        self.assertEqual(key_tree(written), key_tree(committed))
        self.assertEqual(sorted(os.listdir(self.out)), sorted(os.listdir(FIXTURE)))
        self.assertEqual(sorted(written["sha256"]), sorted(committed["sha256"]))
        for k in ("format", "version", "name", "tokenizer", "text", "image", "logit_scale",
                  "diffusion", "reference", "card"):
            self.assertEqual(written[k], committed[k], k)
        for f, h in written["sha256"].items():
            self.assertEqual(h, bundle_writer.sha256_file(os.path.join(self.out, f)), f)

    def test_interrupted_fixture_write_leaves_nothing(self):
        root = tempfile.mkdtemp(prefix="fixture_boom_")
        try:
            out = os.path.join(root, "tiny_bundle")
            # After the TorchScript files and the tokenizer are written, before the reference.
            with mock.patch("ctok_py.default_models.export.save_safetensors",
                            side_effect=Boom("interrupted")):
                with self.assertRaises(Boom):
                    self.mfb.build(out, seed=0)
            self.assertEqual(os.listdir(root), [])
        finally:
            shutil.rmtree(root)


if __name__ == "__main__":
    unittest.main()

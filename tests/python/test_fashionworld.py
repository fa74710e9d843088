"""Tests of the FashionWorld generator (specs/fashionworld.md).

Run: cd /work/main && PYTHONPATH=scripts/python /usr/bin/python3 -m unittest -v \
         tests/python/test_fashionworld.py
"""
import collections
import contextlib
import io
import json
import os
import shutil
import tempfile
import unittest

import cv2
import numpy as np

from ctok_py import fashionworld as fw

TRAIN_IDS = 20
VAL_IDS = 10
S = 3
U = 3
SPLITS = ("train", "validation")


def _generate(out, seed, workers, extra=()):
    argv = ["--out", out, "--seed", str(seed), "--train-ids", str(TRAIN_IDS),
            "--val-ids", str(VAL_IDS), "--styles", str(S), "--user", str(U),
            "--workers", str(workers)] + list(extra)
    with contextlib.redirect_stdout(io.StringIO()):
        return fw.generate(argv)


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


class FashionWorldTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fashionworld_test_")
        cls.a = os.path.join(cls.tmp, "a")
        cls.b = os.path.join(cls.tmp, "b")
        cls.c = os.path.join(cls.tmp, "c")
        cls.world = _generate(cls.a, 0, 2)
        _generate(cls.b, 0, 1)  # same seed, other worker count
        _generate(cls.c, 1, 2)  # other seed
        cls.annos = {s: fw.load_split(cls.a, s) for s in SPLITS}
        cls.captions = {s: fw.load_captions(cls.a, s) for s in SPLITS}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    # -- determinism -----------------------------------------------------------------

    def test_same_seed_is_byte_identical(self):
        fa, fb = _files(self.a), _files(self.b)
        self.assertEqual(sorted(fa), sorted(fb))
        for name in fa:
            self.assertEqual(fa[name], fb[name], name)
        kinds = collections.Counter(os.path.splitext(n)[1] for n in fa)
        self.assertEqual(kinds[".jpg"], (TRAIN_IDS + VAL_IDS) * S * (1 + U))
        self.assertEqual(kinds[".json"], (TRAIN_IDS + VAL_IDS) * S * (1 + U) + 1)
        self.assertEqual(kinds[".jsonl"], 2)

    def test_other_seed_differs(self):
        fa, fc = _files(self.a), _files(self.c)
        self.assertEqual(sorted(fa), sorted(fc))  # same layout
        for split in SPLITS:
            for sub, ext in (("annos", ".json"), ("image", ".jpg")):
                names = [n for n in fa if n.startswith(os.path.join(split, sub)) and n.endswith(ext)]
                differ = sum(fa[n] != fc[n] for n in names)
                self.assertGreater(differ, 0.9 * len(names), (split, sub))
            cap = os.path.join(split, "captions.jsonl")
            self.assertNotEqual(fa[cap], fc[cap])

    def test_no_temporary_files_left(self):
        self.assertEqual(sorted(os.listdir(self.a)), ["train", "validation", "world.json"])
        for split in SPLITS:
            self.assertEqual(sorted(os.listdir(os.path.join(self.a, split))),
                             ["annos", "captions.jsonl", "image"])

    # -- annotation format -----------------------------------------------------------

    def _items(self, split):
        for anno in self.annos[split]:
            for key, item in fw.items(anno):
                yield anno, key, item

    def test_annotation_keys_and_values(self):
        cats = {name: (cid, parent) for cid, name, parent in fw.CATEGORIES}
        colors = {c for c, _ in fw.COLORS}
        required = ["category_id", "category_name", "style", "bounding_box", "segmentation",
                    "scale", "occlusion", "zoom_in", "viewpoint", "landmarks", "parent",
                    "color", "pattern"]
        for split in SPLITS:
            self.assertEqual(len(self.annos[split]),
                             (TRAIN_IDS if split == "train" else VAL_IDS) * S * (1 + U))
            for anno in self.annos[split]:
                self.assertIn(anno["source"], ("shop", "user"))
                self.assertIsInstance(anno["pair_id"], int)
                keys = [k for k, _ in fw.items(anno)]
                self.assertIn(keys, (["item1"], ["item1", "item2"]))
                if anno["source"] == "shop":
                    self.assertEqual(keys, ["item1"])
                self.assertTrue(os.path.isfile(anno["image_path"]))
                with open(anno["anno_path"]) as f:
                    raw = json.load(f)
                self.assertEqual(set(raw), {"source", "pair_id"} | set(keys))
            for anno, key, item in self._items(split):
                for k in required:
                    self.assertIn(k, item)
                cid, parent = cats[item["category_name"]]
                self.assertEqual(item["category_id"], cid)
                self.assertEqual(item["parent"], parent)
                self.assertIn(item["color"], colors)
                self.assertIn(item["pattern"], fw.PATTERNS)
                for k in ("scale", "occlusion", "zoom_in", "viewpoint"):
                    self.assertIn(item[k], (1, 2, 3), k)
                self.assertEqual(item["landmarks"], [])
                if key == "item1":
                    self.assertGreaterEqual(item["style"], 1)
                    self.assertLessEqual(item["style"], S)
                    self.assertNotIn("own_pair_id", item)
                else:
                    self.assertEqual(item["style"], 0)
                    self.assertNotEqual(item["own_pair_id"], anno["pair_id"])

    def test_boxes_and_polygons(self):
        for split in SPLITS:
            for anno, key, item in self._items(split):
                x1, y1, x2, y2 = item["bounding_box"]
                self.assertTrue(0 <= x1 < x2 <= fw.IMAGE_SIZE and 0 <= y1 < y2 <= fw.IMAGE_SIZE,
                                (anno["image"], key, item["bounding_box"]))
                self.assertGreaterEqual(x2 - x1, 2)
                self.assertGreaterEqual(y2 - y1, 2)
                polys = item["segmentation"]
                self.assertGreaterEqual(len(polys), 1)
                for p in polys:
                    self.assertEqual(len(p) % 2, 0)
                    self.assertGreaterEqual(len(p), 6)
                    self.assertTrue(all(isinstance(v, int) for v in p))
                xs = [v for p in polys for v in p[0::2]]
                ys = [v for p in polys for v in p[1::2]]
                # tight: the polygons' extreme points are the box's edges (x2, y2 exclusive)
                self.assertEqual((min(xs), min(ys), max(xs) + 1, max(ys) + 1), (x1, y1, x2, y2),
                                 (anno["image"], key))

    def test_images_decode_and_shop_background(self):
        for split in SPLITS:
            for anno in self.annos[split]:
                img = cv2.imread(anno["image_path"], cv2.IMREAD_COLOR)
                self.assertEqual(img.shape, (fw.IMAGE_SIZE, fw.IMAGE_SIZE, 3))
                if anno["source"] == "shop":
                    x1, y1, x2, y2 = anno["item1"]["bounding_box"]
                    outside = np.ones(img.shape[:2], bool)
                    outside[max(y1 - 2, 0):y2 + 2, max(x1 - 2, 0):x2 + 2] = False
                    if outside.any():
                        bg = img[outside].astype(np.float32).mean(axis=0)
                        self.assertLess(np.abs(bg - np.array(fw.SHOP_BG)).max(), 6.0)

    def test_plain_shop_colour_is_recognisable(self):
        palette = [(n, np.array(rgb, np.float32)) for n, rgb in fw.COLORS]
        scales = np.linspace(0.5, 1.05, 23, dtype=np.float32)
        total = right = 0
        for split in SPLITS:
            for anno in self.annos[split]:
                item = anno["item1"]
                if anno["source"] != "shop" or item["pattern"] != "plain":
                    continue
                img = cv2.imread(anno["image_path"], cv2.IMREAD_COLOR)[..., ::-1]
                mask = np.zeros(img.shape[:2], np.uint8)
                cv2.fillPoly(mask, [np.array(p).reshape(-1, 2) for p in item["segmentation"]], 1)
                mask = cv2.erode(mask, np.ones((3, 3), np.uint8)) > 0
                if mask.sum() < 10:
                    continue
                px = np.median(img[mask].astype(np.float32), axis=0)
                dist = [min(np.linalg.norm(px - s * rgb) for s in scales) for _, rgb in palette]
                total += 1
                right += palette[int(np.argmin(dist))][0] == item["color"]
        self.assertGreater(total, 5)
        self.assertGreaterEqual(right / total, 0.9, (right, total))

    # -- identities, styles, splits --------------------------------------------------

    def test_styles_per_identity(self):
        for split in SPLITS:
            by_pair = collections.defaultdict(lambda: collections.defaultdict(list))
            for anno in self.annos[split]:
                it = anno["item1"]
                by_pair[anno["pair_id"]][it["style"]].append(
                    (anno["source"], it["color"], it["pattern"], it["category_name"]))
            n = TRAIN_IDS if split == "train" else VAL_IDS
            self.assertEqual(len(by_pair), n)
            for pair_id, styles in by_pair.items():
                self.assertEqual(sorted(styles), list(range(1, S + 1)))
                looks = set()
                cats = set()
                for style, rows in styles.items():
                    sources = collections.Counter(r[0] for r in rows)
                    self.assertEqual(sources, {"shop": 1, "user": U})
                    self.assertEqual(len({(r[1], r[2]) for r in rows}), 1)
                    looks.add((rows[0][1], rows[0][2]))
                    cats |= {r[3] for r in rows}
                self.assertEqual(len(looks), S, pair_id)  # distinct (colour, pattern)
                self.assertEqual(len(cats), 1)

    def test_image_counts(self):
        for split in SPLITS:
            n = TRAIN_IDS if split == "train" else VAL_IDS
            src = collections.Counter(a["source"] for a in self.annos[split])
            self.assertEqual(src["shop"], n * S)
            self.assertEqual(src["user"], n * S * U)

    def test_identities_never_cross_splits(self):
        ids = {s: {a["pair_id"] for a in self.annos[s]} for s in SPLITS}
        self.assertFalse(ids["train"] & ids["validation"])
        self.assertEqual(ids["train"], set(range(1, TRAIN_IDS + 1)))
        self.assertEqual(ids["validation"], set(range(100001, 100001 + VAL_IDS)))
        for split in SPLITS:
            for anno, key, item in self._items(split):
                if key != "item1":
                    self.assertIn(item["own_pair_id"], ids[split])

    def test_distractors_present(self):
        n = sum(1 for s in SPLITS for a in self.annos[s] if "item2" in a)
        users = sum(1 for s in SPLITS for a in self.annos[s] if a["source"] == "user")
        self.assertGreater(n, 0.1 * users)
        self.assertLess(n, 0.5 * users)

    # -- captions --------------------------------------------------------------------

    def test_captions(self):
        words = set(fw.CAPTION_WORDS)
        self.assertEqual(len(words), len(fw.CAPTION_WORDS))
        self.assertLessEqual(len(words), 60)
        hidden = [c["name"] for c in self.world["categories"] if c["hidden"]]
        self.assertEqual(sorted(hidden), ["shirt", "sneaker"])
        parents = {name: parent for _, name, parent in fw.CATEGORIES}
        for split in SPLITS:
            annos = {a["image"]: a for a in self.annos[split]}
            self.assertEqual(len(self.captions[split]), len(annos))
            self.assertEqual([c["image"] for c in self.captions[split]], sorted(annos))
            own = parent_only = 0
            for row in self.captions[split]:
                self.assertEqual(set(row), {"image", "item", "caption"})
                self.assertEqual(row["item"], "item1")
                item = annos[row["image"]][row["item"]]
                self.assertGreater(item["style"], 0)
                toks = row["caption"].split()
                self.assertEqual(" ".join(toks), row["caption"])
                for t in toks:
                    self.assertIn(t, words, row["caption"])
                padded = " " + row["caption"] + " "
                for h in hidden:
                    self.assertNotIn(" " + h + " ", padded, row["caption"])
                self.assertIn(item["color"], toks)
                if item["pattern"] != "plain":
                    self.assertTrue(item["pattern"] in toks
                                    or fw.PATTERN_NOUNS[item["pattern"]] in toks, row["caption"])
                name = item["category_name"]
                has_own = (" " + name + " ") in padded
                has_parent = parents[name] in toks
                self.assertTrue(has_own or has_parent, row["caption"])
                if name in hidden:
                    self.assertTrue(has_parent)
                elif parents[name] != name and name not in hidden:
                    own += has_own
                    parent_only += not has_own
            if split == "train":
                self.assertGreater(own, parent_only)
                self.assertGreater(parent_only, 0)

    def test_caption_words_cover_every_option(self):
        rng = np.random.default_rng(0)
        words = set(fw.CAPTION_WORDS)
        seen = set()
        for _, name, _ in fw.CATEGORIES:
            for c, _ in fw.COLORS:
                for p in fw.PATTERNS:
                    for _ in range(8):
                        cap = fw.make_caption(rng, c, p, name, False, 0.5)
                        seen |= set(cap.split())
        self.assertLessEqual(seen, words)
        self.assertEqual(seen, words)  # no unused words

    # -- world.json ------------------------------------------------------------------

    def test_world_json(self):
        w = fw.load_world(self.a)
        self.assertEqual(w["generator"], fw.GENERATOR)
        self.assertEqual(w["seed"], 0)
        self.assertEqual(w["options"]["styles"], S)
        self.assertEqual(w["options"]["user"], U)
        self.assertEqual([c["id"] for c in w["categories"]], list(range(1, 11)))
        self.assertEqual(len(w["colors"]), 10)
        self.assertTrue(all(len(c["rgb"]) == 3 for c in w["colors"]))
        self.assertEqual(w["patterns"], ["plain", "striped", "dotted", "checked"])
        self.assertEqual(w["caption_words"], list(fw.CAPTION_WORDS))
        for split in SPLITS:
            info = w["splits"][split]
            annos = self.annos[split]
            n_img = len(os.listdir(os.path.join(self.a, split, "image")))
            self.assertEqual(info["images"], n_img)
            self.assertEqual(info["images"], len(annos))
            self.assertEqual(info["shop_images"], sum(a["source"] == "shop" for a in annos))
            self.assertEqual(info["user_images"], sum(a["source"] == "user" for a in annos))
            self.assertEqual(info["items"], sum(len(fw.items(a)) for a in annos))
            self.assertEqual(info["distractor_items"], sum("item2" in a for a in annos))
            self.assertEqual(info["captions"], len(self.captions[split]))
            self.assertEqual(info["identities"], len({a["pair_id"] for a in annos}))
            lo, hi = info["pair_id_range"]
            self.assertEqual({a["pair_id"] for a in annos}, set(range(lo, hi + 1)))
            self.assertEqual(sum(info["identities_per_category"].values()), info["identities"])

    def test_single_split_keeps_compatible_world(self):
        root = os.path.join(self.tmp, "single")
        _generate(root, 0, 1)
        _generate(root, 0, 1, ["--splits", "validation"])
        w = fw.load_world(root)
        self.assertEqual(sorted(w["splits"]), ["train", "validation"])
        with open(os.path.join(root, "world.json")) as f1, \
                open(os.path.join(self.a, "world.json")) as f2:
            self.assertEqual(f1.read(), f2.read())

    def test_hidden_option_and_offsets(self):
        root = os.path.join(self.tmp, "nohidden")
        w = _generate(root, 0, 1, ["--hidden", "", "--splits", "train", "--train-ids", "4",
                                   "--id-offset-train", "100", "--distractor-rate", "0"])
        self.assertFalse(any(c["hidden"] for c in w["categories"]))
        annos = fw.load_split(root, "train")
        self.assertEqual({a["pair_id"] for a in annos}, set(range(101, 105)))
        self.assertFalse(any("item2" in a for a in annos))
        # Identity rendering depends on (seed, split, source index) only.
        other = os.path.join(self.tmp, "offset")
        _generate(other, 0, 1, ["--hidden", "", "--splits", "train", "--train-ids", "2",
                                "--id-offset-train", "102", "--distractor-rate", "0"])
        with open(os.path.join(root, "train", "image", f"{2 * S * (1 + U) + 1:06d}.jpg"), "rb") as f1, \
                open(os.path.join(other, "train", "image", "000001.jpg"), "rb") as f2:
            self.assertEqual(f1.read(), f2.read())


if __name__ == "__main__":
    unittest.main()

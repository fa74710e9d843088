#!/usr/bin/python3
"""Writes the fuzz seed corpora under tests/fuzz/corpus/<target>/ (small, committed).

Run from anywhere: /usr/bin/python3 tests/fuzz/make_seeds.py. Deterministic; needs only the
standard library. The fuzzers add what they find to a scratch copy (scripts/fuzz.sh), never
to these folders.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None, pad=True, order=None):
    """tensors: list of (name, dtype, shape, raw bytes)."""
    header, offset, blob = {}, 0, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blob += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + blob


def f32(values):
    return struct.pack("<%df" % len(values), *values)


TEXTS = {
    "plain": "a photo of a <my-dress> dress",
    "two_tokens": "<my-dress> and <my-dress-v2> next to <a>><a> x<y",
    "overlap": "<a>>><a><<a>>x<yx<y<my-dress-v2<my-dress>",
    "invalid_utf8": b"a \xff\xfe dress \xc3( \xe2\x82 \xf0\x9f\x98 \xed\xa0\x80 <my-dress>\xc0\xaf",
    "unicode": "\u00c9COLE \u03a3\u0391\u03a3 \u0130stanbul \u00fc-token <\u00fc-token> \U0001f457 \u4e2d\u6587",
    "html": "&amp; &lt;my-dress&gt; &#x1F600; &#39; &notin; &#0; &#xD800; &nbsp;",
    "contractions": "don't we'll they're IT'S 's 't 1234567 3.14 a-b_c",
    "whitespace": " \t\n\r\x0b\x0c\u00a0\u2003\u3000 <my-dress>\u00a0dress  ",
    "controls": "\x00\x01\x1b[31m<my-dress>\x7f\u200b\ufeff",
    "long_word": "x" * 300 + " <my-dress>" * 20,
    "empty": "",
}


def tokenizer_seeds():
    for target in ("clip_bpe", "sentencepiece"):
        for name, text in TEXTS.items():
            write(target, name, text)


def safetensors_seeds():
    t = "safetensors"
    write(t, "one_f32", safetensors([("x", "F32", [2, 3], f32([0, 1, 2, 3, 4, 5]))]))
    write(t, "metadata", safetensors([("w", "F32", [1, 2], f32([1.5, -2]))], {"format": "pt", "k": "v"}))
    write(t, "dtypes", safetensors([
        ("a", "F64", [2], struct.pack("<2d", 1e300, -0.0)),
        ("b", "F16", [3], struct.pack("<3H", 0x3C00, 0x7C00, 0x0001)),
        ("c", "BF16", [2], struct.pack("<2H", 0x3F80, 0x7FC0)),
        ("d", "I64", [2], struct.pack("<2q", -1, 2**62)),
        ("e", "I32", [1], struct.pack("<i", -7)),
        ("f", "I16", [1], struct.pack("<h", 300)),
        ("g", "I8", [2], struct.pack("<2b", -128, 127)),
        ("h", "U8", [2], b"\x00\xff"),
        ("i", "BOOL", [3], b"\x00\x01\x01"),
    ]))
    write(t, "scalar_and_empty", safetensors([("s", "F32", [], f32([7])), ("z", "F32", [0, 4], b"")]))
    write(t, "unpadded", safetensors([("x", "I32", [1, 1, 1], struct.pack("<i", 5))], pad=False))
    write(t, "header_only", safetensors([]))
    write(t, "truncated", safetensors([("x", "F32", [4], f32([1, 2, 3, 4]))])[:-3])


def token_seeds():
    t = "token_file"
    meta = {
        "format": "ctok-token/1", "token": "<my-dress>", "parent": "dress",
        "bundle": "fixture-tiny", "bundle_sha256": "0" * 64,
        "subspace_words": json.dumps(["red", "long"]), "coefficients": json.dumps([[0.5, -0.25]]),
        "config": json.dumps({"steps": 10, "lr": 0.01}), "metrics": json.dumps({"loss": 0.5}),
        "note": "kept as is",
    }
    vec = f32([0.01 * i for i in range(24)])
    write(t, "ctok_token", safetensors([("<my-dress>", "F32", [1, 24], vec)], meta))
    write(t, "ctok_two_vectors", safetensors([("<my-dress>", "F32", [2, 24], vec + vec)], dict(meta, coefficients="[]", subspace_words="[]")))
    write(t, "diffusers", safetensors([("<cat-toy>", "F32", [24], vec)]))
    write(t, "a1111", safetensors([("emb_params", "F16", [1, 4], struct.pack("<4H", 0x3C00, 0x3800, 0xBC00, 0))], {"name": "x"}))
    write(t, "f64", safetensors([("<d>", "F64", [1, 2], struct.pack("<2d", 0.5, -1.0))]))
    write(t, "newer_version", safetensors([("<n>", "F32", [1, 1], f32([1]))], {"format": "ctok-token/2"}))


def bundle_seeds():
    t = "bundle_manifest"
    with open(os.path.join(ROOT, "tests", "data", "tiny_bundle", "bundle.json"), "rb") as f:
        tiny = f.read()
    write(t, "tiny_bundle", tiny)
    m = json.loads(tiny)
    clip = dict(m, name="sd15", tokenizer={"type": "clip-bpe", "file": "bpe_simple_vocab_16e6.txt.gz"},
                text=dict(m["text"], context_length=77, width=768, vocab_size=49408, bos_id=49406, eos_id=49407, pad_id=49407))
    write(t, "clip", json.dumps(clip, indent=1))
    pixel = dict(m, diffusion={"unet": "unet.pt", "image_size": 32, "num_train_timesteps": 1000,
                               "beta_schedule": "squaredcos_cap_v2", "prediction": "v_prediction"})
    pixel.pop("reference")
    write(t, "pixel_space", json.dumps(pixel))
    minimal = {k: m[k] for k in ("format", "version", "name", "tokenizer", "text", "image", "logit_scale")}
    write(t, "minimal", json.dumps(minimal, separators=(",", ":")))
    write(t, "newer", json.dumps(dict(minimal, version=2, extra={"x": [1, 2]})))
    write(t, "duplicate_key", '{"format": "ctok-bundle", "format": "x", "version": 1}')


def deepfashion2_seeds():
    t = "deepfashion2"
    fw = {"source": "shop", "pair_id": 100001, "item1": {
        "category_id": 10, "category_name": "ankle boot", "style": 1, "bounding_box": [5, 17, 59, 46],
        "segmentation": [[54, 17, 53, 18, 50, 22, 42, 22, 39, 19, 5, 40, 57, 45, 58, 35]],
        "scale": 3, "occlusion": 1, "zoom_in": 1, "viewpoint": 1, "landmarks": [],
        "parent": "shoe", "color": "yellow", "pattern": "checked", "own_pair_id": 100001}}
    write(t, "fashionworld", json.dumps(fw))
    df2 = {"segmentation": None, "source": "user", "pair_id": 1, "item2": {
        "segmentation": [[257.64, 304.55, 316.12, 295.71], [1.0, 2.0, 3.0, 4.0]], "scale": 3, "viewpoint": 2,
        "zoom_in": 2, "landmarks": [182, 59, 1, 221, 58, 2, 0, 0, 0], "style": 0,
        "bounding_box": [114, 34, 372, 405], "category_id": 7, "occlusion": 2, "category_name": "shorts"},
        "item1": {"segmentation": [[10, 10, 20, 10, 20, 20]], "scale": 2, "viewpoint": 3, "zoom_in": 1,
                  "landmarks": [1, 2, 2], "style": 2, "bounding_box": [0, 0, 640, 480], "category_id": 1,
                  "occlusion": 1, "category_name": "short sleeve top"}}
    df2.pop("segmentation")
    write(t, "deepfashion2", json.dumps(df2, indent=2))
    write(t, "gap", json.dumps({"source": "shop", "pair_id": 3, "item2": fw["item1"]}))
    write(t, "deep", "[" * 40 + "]" * 40)


def main():
    tokenizer_seeds()
    safetensors_seeds()
    token_seeds()
    bundle_seeds()
    deepfashion2_seeds()


if __name__ == "__main__":
    main()

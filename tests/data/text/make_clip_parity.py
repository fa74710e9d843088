#!/usr/bin/env python3
"""Makes tests/data/text/clip-python-parity.jsonl: texts and the ids that OpenAI's CLIP
simple_tokenizer.py gives them, minus ftfy (out of scope, docs/tokenizers.md).

Needs the `regex` module (not packaged for Debian's python3 here; any python3 with
`regex` will do) and the shared merges file:
    python3 tests/data/text/make_clip_parity.py ../shared/clip/bpe_simple_vocab_16e6.txt.gz
The tokenizer below is simple_tokenizer.py (MIT, OpenAI) with ftfy.fix_text removed from
basic_clean. Each line is {"text": ..., "ids": [...]} or, for byte strings that are not
valid UTF-8, {"hex": ..., "ids": [...]} where Python decoded the bytes with
errors="replace" (the behaviour ctok reproduces for invalid UTF-8). Random characters are
drawn from those assigned in this Python's unicodedata only: regex may be at a newer
Unicode version than the committed tables, and characters assigned since then differ.
"""
import gzip, html, json, random, sys
import regex as re

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~")+1))+list(range(ord("¡"), ord("¬")+1))+list(range(ord("®"), ord("ÿ")+1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b); cs.append(2**8+n); n += 1
    cs = [chr(n) for n in cs]
    return dict(zip(bs, cs))

def get_pairs(word):
    pairs = set(); prev = word[0]
    for ch in word[1:]:
        pairs.add((prev, ch)); prev = ch
    return pairs

def basic_clean(text):
    text = html.unescape(html.unescape(text))
    return text.strip()

def whitespace_clean(text):
    import re as stdre
    text = stdre.sub(r'\s+', ' ', text)
    return text.strip()

class SimpleTokenizer:
    def __init__(self, bpe_path):
        self.byte_encoder = bytes_to_unicode()
        merges = gzip.open(bpe_path).read().decode("utf-8").split('\n')
        merges = merges[1:49152-256-2+1]
        merges = [tuple(merge.split()) for merge in merges]
        vocab = list(bytes_to_unicode().values())
        vocab = vocab + [v+'</w>' for v in vocab]
        for merge in merges:
            vocab.append(''.join(merge))
        vocab.extend(['<|startoftext|>', '<|endoftext|>'])
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {'<|startoftext|>': '<|startoftext|>', '<|endoftext|>': '<|endoftext|>'}
        self.pat = re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", re.IGNORECASE)

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + ( token[-1] + '</w>',)
        pairs = get_pairs(word)
        if not pairs:
            return token+'</w>'
        while True:
            bigram = min(pairs, key = lambda pair: self.bpe_ranks.get(pair, float('inf')))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except:
                    new_word.extend(word[i:])
                    break
                if word[i] == first and i < len(word)-1 and word[i+1] == second:
                    new_word.append(first+second); i += 2
                else:
                    new_word.append(word[i]); i += 1
            new_word = tuple(new_word)
            word = new_word
            if len(word) == 1:
                break
            else:
                pairs = get_pairs(word)
        word = ' '.join(word)
        self.cache[token] = word
        return word

    def encode(self, text):
        bpe_tokens = []
        text = whitespace_clean(basic_clean(text)).lower()
        for token in re.findall(self.pat, text):
            token = ''.join(self.byte_encoder[b] for b in token.encode('utf-8'))
            bpe_tokens.extend(self.encoder[bpe_token] for bpe_token in self.bpe(token).split(' '))
        return bpe_tokens


words = "a photo of the red striped dress cat dog it's we've I'm they'll you'd don't ΚΑΛΟΣ ΟΔΥΣΣΕΥΣ Σ ΣΑ αΣ İstanbul ſtraße 'ſ 'S 'LL <|startoftext|> <|endoftext|> <|ſtartoftext|> <|EndOfText|> café naïve 東京 ドレス 👗 👠🏽 ❤️ 123 3.14 1,000 Ⅻ ½ ² ٣ aͅb ǅ ǈ ß ﬁ Ａ ｂ 𝐀 ꙮ ԱԲ עברית العربية हिन्दी ไทย 한국어".split()
ents = ["&amp;", "&amp", "&lt;", "&gt", "&quot;", "&#39;", "&#x41;", "&#X4a", "&#0;", "&#13;", "&#128;", "&#x9F;", "&#xD800;", "&#99999999999;", "&#1;", "&#x110000;", "&#65", "&notit;", "&ampxyz", "&amp;amp;", "&amp;lt;", "&#;", "&#x;", "&", "&&", "&nbsp;", "&NotNestedGreaterGreater;", "&acE;", "&copy", "&copysr;", "&AElig", "&aeligx", "&#x1F457;", "&zwnj;", "&ThickSpace;", "&bne;"]
spaces = [" ", "  ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x85", "\xa0", "\u2028", "\u3000", "\u200b", "\u2009", " \u180e "]
punct = list("!?.,;:-_'\"()[]{}<>|/\\@#$%^*+=~`") + ["—", "…", "«", "»", "’", "“", "\u0301", "\u0345", "\u0307", "\ufffd", "\x00", "\x7f", "\u00ad"]

def rand_cp():
    while True:
        cp = rng.randrange(0, 0x30000) if rng.random() < 0.8 else rng.randrange(0, 0x110000)
        if not (0xD800 <= cp <= 0xDFFF) and (ASSIGNED_ONLY == 0 or __import__("unicodedata").category(chr(cp)) != "Cn"):
            return chr(cp)

def gen():
    parts = []
    for _ in range(rng.randint(0, 12)):
        r = rng.random()
        if r < 0.35: parts.append(rng.choice(words))
        elif r < 0.5: parts.append(rng.choice(ents))
        elif r < 0.65: parts.append(rng.choice(spaces))
        elif r < 0.8: parts.append(rng.choice(punct))
        elif r < 0.9: parts.append(''.join(rand_cp() for _ in range(rng.randint(1, 5))))
        else: parts.append(''.join(rng.choice("abcdefghijklmnopqrstuvwxyzAEIOU") for _ in range(rng.randint(10, 60))))
        if rng.random() < 0.6: parts.append(" ")
    return ''.join(parts)


HANDPICKED = [
    "ΟΔΥΣΣΕΥΣ ΚΑΛΟΣ Σ ΑΣ. ΣΑΣ",          # final sigma rule of str.lower()
    "İSTANBUL İ",                         # U+0130 lowercases to two characters
    "x'ſam <|ſtartoftext|> it'ſ",          # long s matches 's under IGNORECASE
    "aͅb ͅ",                               # U+0345 matches no branch under IGNORECASE
    "&amp;lt;b&amp;gt; &ampxyz &#x41;&#66 &#0; &#128; &#xD800; &#99999999999; &notit;",
    "&NotNestedGreaterGreater; &acE; &copysr; &AElig &aeligx &#x1F457;",
    "<|startoftext|>a photo<|endoftext|> <|EndOfText|>",
    "\x1c\x1d\x85\xa0\u2028\u3000a\u200bb\u180ec",
    "ǅemal ǈ ß ﬁne Ａｂｃ 𝐀𝐁 Ⅻ ½ ² ٣",
    "pneumonoultramicroscopicsilicovolcanoconiosis" * 8,
    "👗👠🏽❤️🇫🇷",
    "don't 'LL 'Re 'VE 'M 'D 'T",
]

def main():
    import os
    bpe_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "../../../shared/clip/bpe_simple_vocab_16e6.txt.gz")
    global tok, rng, ASSIGNED_ONLY
    ASSIGNED_ONLY = 1
    tok = SimpleTokenizer(bpe_path)
    rng = random.Random(20240611)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "clip-python-parity.jsonl")
    with open(out, "w", encoding="utf-8") as f:
        def emit(obj):
            f.write(json.dumps(obj) + "\n")
        for text in HANDPICKED:
            emit({"text": text, "ids": [49406] + tok.encode(text) + [49407]})
        for b in [b"\xff\xfe", b"a\xe6\x9d photo", b"\xed\xa0\x80", b"\xf0\x9f\x91", b"\xc0\xaf\xe0\x80\xbf",
                  b"\xf4\x90\x80\x80 dress", b"caf\xe9 cr\xe8me"]:
            emit({"hex": b.hex(), "ids": [49406] + tok.encode(b.decode("utf-8", "replace")) + [49407]})
        for _ in range(400):
            if rng.random() < 0.1:
                b = bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
                if rng.random() < 0.5:
                    b = "a photo ".encode() + b + " dress".encode()
                emit({"hex": b.hex(), "ids": [49406] + tok.encode(b.decode("utf-8", "replace")) + [49407]})
            else:
                text = gen()
                emit({"text": text, "ids": [49406] + tok.encode(text) + [49407]})
    print("wrote", out)


if __name__ == "__main__":
    main()

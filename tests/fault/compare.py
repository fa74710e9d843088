#!/usr/bin/python3
"""Comparisons and audits for the kill-and-resume tests (tests/fault/kill_resume.sh).

  compare.py token REF OUT        token files: tensor bytes bit-identical, metadata equal
                                  except metrics.seconds (wall time)
  compare.py csv REF OUT          CSV logs: same header and rows, the "seconds" column left out
  compare.py json REF OUT [KEY..] JSON files equal, the given top-level keys left out
  compare.py safetensors FILE..   each file is a complete, well-formed safetensors file
  compare.py audit DIR            every visible file under DIR is whole: *.safetensors and
                                  *.ckpt parse, *.csv rows are complete; hidden *.tmp.* files
                                  (atomic-write leftovers of a killed process) are counted

Exit 0 when equal / sound; 1 with a message naming the first difference. Standard library only.
"""
import json
import os
import struct
import sys


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError("%s: %d bytes, shorter than the 8-byte header length" % (path, len(data)))
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError("%s: header length %d exceeds the file (%d bytes)" % (path, n, len(data)))
    header = json.loads(data[8:8 + n].decode("utf-8"))
    body = data[8 + n:]
    tensors, end = {}, 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        b, e = entry["data_offsets"]
        if not (0 <= b <= e <= len(body)):
            raise ValueError("%s: tensor %s offsets [%d, %d) outside the data (%d bytes)" % (path, name, b, e, len(body)))
        tensors[name] = (entry["dtype"], entry["shape"], body[b:e])
        end = max(end, e)
    if end != len(body):
        raise ValueError("%s: %d data bytes, tensors cover %d" % (path, len(body), end))
    return header.get("__metadata__", {}), tensors


def fail(msg):
    print("compare: " + msg)
    sys.exit(1)


def token(ref, out):
    rm, rt = read_safetensors(ref)
    om, ot = read_safetensors(out)
    if sorted(rt) != sorted(ot):
        fail("tensor names differ: %s vs %s" % (sorted(rt), sorted(ot)))
    for name in rt:
        if rt[name][:2] != ot[name][:2]:
            fail("tensor %s: dtype/shape %s vs %s" % (name, rt[name][:2], ot[name][:2]))
        if rt[name][2] != ot[name][2]:
            a = struct.unpack("<%df" % (len(rt[name][2]) // 4), rt[name][2]) if rt[name][0] == "F32" else ()
            b = struct.unpack("<%df" % (len(ot[name][2]) // 4), ot[name][2]) if ot[name][0] == "F32" else ()
            diff = max((abs(x - y) for x, y in zip(a, b)), default=float("nan"))
            fail("tensor %s: bytes differ (max |diff| %g)" % (name, diff))
    print("compare: token tensors bit-identical")
    for key in sorted(set(rm) | set(om)):
        a, b = rm.get(key), om.get(key)
        if key == "metrics" and a is not None and b is not None:
            a, b = json.loads(a), json.loads(b)
            a.pop("seconds", None)
            b.pop("seconds", None)
        if a != b:
            fail("token metadata %s differs:\n  ref %s\n  out %s" % (key, a, b))
    print("compare: token metadata equal (but metrics.seconds)")


def csv(ref, out):
    def rows(path):
        with open(path) as f:
            lines = f.read().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        else:
            fail("%s: last line is not complete" % path)
        header = lines[0].split(",")
        drop = header.index("seconds") if "seconds" in header else None
        keep = lambda r: [c for i, c in enumerate(r.split(",")) if i != drop]
        return keep(lines[0]), [keep(line) for line in lines[1:]]
    rh, rr = rows(ref)
    oh, orows = rows(out)
    if rh != oh:
        fail("csv headers differ: %s vs %s" % (rh, oh))
    if len(rr) != len(orows):
        fail("csv: %d rows vs %d" % (len(rr), len(orows)))
    for i, (a, b) in enumerate(zip(rr, orows)):
        if a != b:
            fail("csv row %d differs:\n  ref %s\n  out %s" % (i + 1, a, b))
    print("compare: %s equal (%d rows, but the seconds column)" % (os.path.basename(out), len(rr)))


def jsonfile(ref, out, skip):
    with open(ref) as f:
        a = json.load(f)
    with open(out) as f:
        b = json.load(f)
    for k in skip:
        a.pop(k, None)
        b.pop(k, None)
    if a != b:
        fail("json differs:\n  ref %s\n  out %s" % (a, b))


def audit(root):
    tmp, checked = 0, 0
    for d, _, files in os.walk(root):
        for name in files:
            path = os.path.join(d, name)
            if name.startswith(".") and ".tmp." in name:
                tmp += 1
                continue
            try:
                if name.endswith(".safetensors") or name.endswith(".ckpt"):
                    read_safetensors(path)
                elif name.endswith(".csv"):
                    with open(path) as f:
                        text = f.read()
                    if text and not text.endswith("\n"):
                        raise ValueError("%s: last row is not complete" % path)
                    widths = {len(line.split(",")) for line in text.splitlines()}
                    if len(widths) > 1:
                        raise ValueError("%s: rows of different widths %s" % (path, sorted(widths)))
                elif name.endswith(".json"):
                    with open(path) as f:
                        json.load(f)
                else:
                    continue
                checked += 1
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
                fail("partial or corrupt file where a reader would take it for a result: %s" % e)
    print("audit: %d file(s) whole, %d hidden temporary file(s) left by the kill" % (checked, tmp))


def main(argv):
    if len(argv) < 2:
        fail(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "token" and len(args) == 2:
        token(*args)
    elif cmd == "csv" and len(args) == 2:
        csv(*args)
    elif cmd == "json" and len(args) >= 2:
        jsonfile(args[0], args[1], args[2:])
    elif cmd == "safetensors":
        for p in args:
            try:
                read_safetensors(p)
            except (ValueError, KeyError, UnicodeDecodeError) as e:
                fail(str(e))
    elif cmd == "audit" and len(args) == 1:
        audit(args[0])
    else:
        fail("usage:\n" + __doc__)


if __name__ == "__main__":
    main(sys.argv)

"""The one bundle writer (bundle.md): every exporter writes its bundle folder through it.

    with bundle_writer.staged(out) as tmp:          # a fresh folder next to ``out``
        scripted.save(os.path.join(tmp, "text_encoder.pt"))
        ...
        bundle_writer.write_manifest(tmp, manifest, files)   # sha256 of files, bundle.json
    # here ``out`` is the complete bundle; an exception above leaves ``out`` as it was

The bundle is written into a temporary folder beside the target (same file system) and
renamed into place only when the body finished, so an interrupted or failed write never
leaves a half bundle where a reader (the C++ core) looks. An existing bundle at ``out`` is
replaced whole. Used by the default-model trainer (default_models/export.py),
export_sd.py and make_fixture_bundle.py.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from typing import Iterable, Iterator

MANIFEST = "bundle.json"


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dump(path: str, manifest: dict) -> None:
    """bundle.json as every writer has written it: indent 2, key order kept, final newline;
    through a .tmp file and a rename, so the manifest itself is never half written."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_manifest(folder: str, manifest: dict, files: Iterable[str]) -> dict:
    """Fill ``manifest["sha256"]`` with the sha256 of ``files`` (sorted by name; the key
    keeps its place in the manifest) and write ``folder``/bundle.json."""
    manifest["sha256"] = {f: sha256_file(os.path.join(folder, f)) for f in sorted(files)}
    _dump(os.path.join(folder, MANIFEST), manifest)
    return manifest


def update_manifest(out: str, manifest: dict) -> None:
    """Rewrite the bundle.json of a finished bundle (for example the card after an
    evaluation), atomically; the files and their sha256 are not touched."""
    _dump(os.path.join(out, MANIFEST), manifest)


@contextlib.contextmanager
def staged(out: str) -> Iterator[str]:
    """Yield an empty temporary folder beside ``out``; on a clean exit it becomes ``out``
    (replacing a bundle there), on an exception it is removed and ``out`` is untouched."""
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(out) + ".tmp-", dir=parent)
    try:
        yield tmp
        if not os.path.isfile(os.path.join(tmp, MANIFEST)):
            raise RuntimeError(f"{out}: no {MANIFEST} was written (call write_manifest)")
        old = None
        if os.path.lexists(out):
            old = tempfile.mkdtemp(prefix="." + os.path.basename(out) + ".old-", dir=parent)
            os.rmdir(old)
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            if old is not None:
                os.replace(old, out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

#!/usr/bin/env python3
"""The plots of a ctok-batch run folder (docs/batch.md), written to <run>/plots/:

  metric.png        the main metric (MRR or accuracy) per cell and method, 95% intervals,
                    one panel per query kind (plain, composition) or category
  deltas.png        the paired deltas of summary.md (cell - reference cell), 95% intervals
  loss-curves.png   the learners' loss curves per cell (mean over its tokens per method,
                    from metrics.loss_curve of every token file)
  renders-<cell>.png  the cell's learned tokens rendered (copied from the cell folder)

    python3 scripts/python/ctok_py/plots.py runs/X        (ctok-batch does this at the end)

Needs python3-matplotlib (scripts/deps.sh installs it). Exit 2 for a folder that is not a
run, 1 when matplotlib is missing.
"""
import json
import math
import os
import shutil
import struct
import sys


def fail(msg, code=2):
    print(f"plots.py: {msg}", file=sys.stderr)
    sys.exit(code)


def load(path):
    with open(path) as f:
        return json.load(f)


def short(point):
    """A cell's label: its grid point, compact."""
    parts = []
    for k, v in point.items():
        key = k.split(".")[-1]
        if isinstance(v, list):
            v = ",".join(str(x) for x in v)
        parts.append(f"{key}={v}")
    return " ".join(parts) if parts else "cell"


def token_metrics(path):
    """metrics of a ctok-token/1 safetensors file (JSON string in __metadata__)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    meta = header.get("__metadata__", {})
    try:
        return json.loads(meta.get("metrics", "{}"))
    except ValueError:
        return {}


def main():
    if len(sys.argv) != 2:
        fail("usage: plots.py RUN_DIR")
    run = sys.argv[1]
    for f in ("experiment.json", "results.json"):
        if not os.path.isfile(os.path.join(run, f)):
            fail(f"{run}: not a ctok-batch run folder (no {f})")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        fail("python3-matplotlib is not installed (scripts/deps.sh installs it)", 1)

    exp = load(os.path.join(run, "experiment.json"))
    grid = exp.get("grid", {})
    cells = []  # (id, point, metrics)
    for name in sorted(os.listdir(run)):
        d = os.path.join(run, name)
        if os.path.isfile(os.path.join(d, "DONE")) and os.path.isfile(os.path.join(d, "metrics.json")):
            m = load(os.path.join(d, "metrics.json"))
            if "table" not in m:
                continue
            cfg = load(os.path.join(d, "config.json"))
            point = {}
            for k in grid:
                v = cfg
                for part in k.split("."):
                    v = v.get(part) if isinstance(v, dict) else None
                point[k] = v
            cells.append((name, point, m))
    if not cells:
        fail(f"{run}: no finished evaluation cell to plot")
    out = os.path.join(run, "plots")
    os.makedirs(out, exist_ok=True)
    order = {k: [json.dumps(v) for v in vals] for k, vals in grid.items()}

    def cell_key(c):
        return [order[k].index(json.dumps(c[1][k])) if json.dumps(c[1][k]) in order[k] else 0 for k in grid]

    cells.sort(key=cell_key)
    main_metric = cells[0][2].get("main", "mrr")
    written = []

    # --- the main metric per cell and method ---------------------------------------------
    sections = []
    for _, _, m in cells:
        for r in m["table"]:
            s = r.get("query", r.get("category", ""))
            if s not in sections:
                sections.append(s)
    methods = []
    for _, _, m in cells:
        for r in m["table"]:
            if r["method"] not in methods:
                methods.append(r["method"])
    fig, axes = plt.subplots(len(sections), 1, figsize=(max(7, 1.1 * len(cells) * max(1, len(methods)) / 2.5), 3.6 * len(sections)),
                             squeeze=False)
    width = 0.8 / max(1, len(methods))
    cmap = plt.get_cmap("tab10")
    for si, sec in enumerate(sections):
        ax = axes[si][0]
        for mi, meth in enumerate(methods):
            xs, ys, lo, hi = [], [], [], []
            for ci, (_, _, m) in enumerate(cells):
                for r in m["table"]:
                    if r.get("query", r.get("category", "")) == sec and r["method"] == meth and r.get(main_metric) is not None:
                        y = r[main_metric]
                        xs.append(ci + (mi - (len(methods) - 1) / 2) * width)
                        ys.append(y)
                        lo.append(y - r.get(main_metric + "_lo", y))
                        hi.append(r.get(main_metric + "_hi", y) - y)
            if xs:
                ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=meth, color=cmap(mi % 10))
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels([short(p) for _, p, _ in cells], rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(main_metric.upper() if main_metric == "mrr" else main_metric)
        ax.set_title(f"{exp.get('name', '')}: {sec} ({main_metric}, 95% interval)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=min(4, len(methods)), loc="upper right")
    fig.tight_layout()
    p = os.path.join(out, "metric.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)

    # --- paired deltas -----------------------------------------------------------------
    dpath = os.path.join(run, "deltas.json")
    deltas = load(dpath) if os.path.isfile(dpath) else []
    if deltas:
        fig, ax = plt.subplots(figsize=(8, 0.32 * len(deltas) + 1.4))
        labels = []
        for i, d in enumerate(deltas):
            colour = "tab:green" if d["lo"] > 0 else ("tab:red" if d["hi"] < 0 else "tab:gray")
            ax.errorbar(d["mean"], i, xerr=[[d["mean"] - d["lo"]], [d["hi"] - d["mean"]]], fmt="o", color=colour, capsize=3)
            labels.append(f"{d['key'].split('.')[-1]}={json.dumps(d['value'])} vs {json.dumps(d['reference'])} · {d['label']}")
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(deltas)))
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(f"Δ {main_metric} (cell − reference), 95% paired bootstrap")
        ax.set_title(f"{exp.get('name', '')}: paired deltas", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        p = os.path.join(out, "deltas.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)

    # --- loss curves: mean per method over the cell's tokens ----------------------------
    curves = []  # (cell label, {method: [(steps, total)]})
    for cid, point, _ in cells:
        tdir = os.path.join(run, cid, "eval", "tokens")
        if not os.path.isdir(tdir):
            continue
        per = {}
        for f in sorted(os.listdir(tdir)):
            if not f.endswith(".safetensors"):
                continue
            c = token_metrics(os.path.join(tdir, f)).get("loss_curve")
            if not c or not c.get("step"):
                continue
            meth = f[: -len(".safetensors")].split("-")[-1]
            per.setdefault(meth, []).append((c["step"], c["total"]))
        if per:
            curves.append((short(point), per))
    if curves:
        n = len(curves)
        cols = min(3, n)
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
        for i, (label, per) in enumerate(curves):
            ax = axes[i // cols][i % cols]
            for mi, (meth, runs) in enumerate(sorted(per.items())):
                steps = runs[0][0]
                vals = [r[1] for r in runs if len(r[1]) == len(steps)]
                mean = [sum(v[j] for v in vals if v[j] is not None) / max(1, sum(1 for v in vals if v[j] is not None))
                        for j in range(len(steps))]
                ax.plot(steps, mean, label=f"{meth} ({len(vals)})", color=cmap(methods.index(meth) % 10 if meth in methods else mi))
            ax.set_title(label, fontsize=8)
            ax.set_xlabel("step", fontsize=8)
            ax.set_ylabel("total loss (mean over tokens)", fontsize=7)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
        for j in range(n, rows * cols):
            axes[j // cols][j % cols].axis("off")
        fig.suptitle(f"{exp.get('name', '')}: learning curves (a training loss: judge tokens by the held-out tables)",
                     fontsize=9)
        fig.tight_layout()
        p = os.path.join(out, "loss-curves.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)

    # --- renders ---------------------------------------------------------------------------
    for cid, _, _ in cells:
        src = os.path.join(run, cid, "renders.png")
        if os.path.isfile(src):
            dst = os.path.join(out, f"renders-{cid}.png")
            shutil.copyfile(src, dst)
            written.append(dst)

    for p in written:
        print(p)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""SymPy side by side with `evolved` on the seed problem (softmax cross-entropy).

For each k, SymPy builds J = log(sum_i exp(theta_i)) - sum_i q_i theta_i component-wise,
takes its Hessian (sympy.hessian) and simplifies every entry of the upper triangle
(the lower one is its mirror), timed. `evolved derive` is timed on the same problem
with k fixed (the whole process, from a release binary), with and without the numeric
check. Prints a Markdown table with the ratio SymPy / evolved.

Usage: benches/sympy_seed.py [--ks 5,10,20] [--bin target/release/evolved] [--reps 5]
Needs sympy (benches/run.sh makes a venv under benches/.venv). Not used by cargo test.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import sympy as sp

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SEED = os.path.join(ROOT, "examples", "softmax_cross_entropy.ef")


def sympy_hessian(k):
    t0 = time.perf_counter()
    th = sp.symbols(f"theta0:{k}")
    q = sp.symbols(f"q0:{k}")
    J = sp.log(sum(sp.exp(t) for t in th)) - sum(a * b for a, b in zip(q, th))
    H = sp.hessian(J, th)
    t1 = time.perf_counter()
    S = sp.zeros(k, k)
    for i in range(k):
        for j in range(i, k):
            S[i, j] = S[j, i] = sp.simplify(H[i, j])
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, S


def check_sympy(S, k):
    """The simplified Hessian must equal diag(p) - p p^T at a point (guards the timing)."""
    import random

    rnd = random.Random(1)
    th = sp.symbols(f"theta0:{k}")
    vals = {t: rnd.uniform(-2, 2) for t in th}
    import math

    e = [math.exp(vals[t]) for t in th]
    s = sum(e)
    p = [x / s for x in e]
    err = 0.0
    for i in range(k):
        for j in range(k):
            want = (p[i] if i == j else 0.0) - p[i] * p[j]
            err = max(err, abs(float(S[i, j].subs(vals)) - want))
    return err


def evolved_process(binary, k, reps, extra):
    src = open(SEED).read().replace("dim k\n", "").replace("^k", f"^{k}")
    with tempfile.NamedTemporaryFile("w", suffix=".ef", delete=False) as f:
        f.write(src)
        path = f.name
    try:
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            subprocess.run([binary, "derive", path, *extra], check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)
    finally:
        os.unlink(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ks", default="5,10,20")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "evolved"))
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    ks = [int(x) for x in args.ks.split(",")]
    have_bin = os.path.exists(args.bin)
    if not have_bin:
        print(f"({args.bin} not found: build it with `cargo build --release` for the evolved columns)", file=sys.stderr)
    print(f"sympy {sp.__version__}, python {sys.version.split()[0]}")
    print()
    print("| k | SymPy hessian | SymPy simplify (upper triangle) | SymPy total | evolved process, no check | ratio | evolved process, with check | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for k in ks:
        d, s, S = sympy_hessian(k)
        err = check_sympy(S, k)
        assert err < 1e-12, f"SymPy's simplified Hessian is off by {err}"
        total = d + s
        row = [f"{k}", f"{d * 1e3:.0f} ms", f"{s:.1f} s", f"{total:.1f} s"]
        if have_bin:
            nc = evolved_process(args.bin, k, args.reps, ["--no-check"])
            wc = evolved_process(args.bin, k, args.reps, [])
            row += [f"{nc * 1e3:.0f} ms", f"{total / nc:.0f}×", f"{wc * 1e3:.0f} ms", f"{total / wc:.0f}×"]
        else:
            row += ["–"] * 4
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""NumPy baseline for `cargo bench --bench evaluator`: the seed loss's Hessian
diag(p) - p p^T and Hessian-vector product p * v - (p^T v) p, p = softmax(theta),
at the same k and the same point as the Rust bench. Prints a Markdown table.

Usage: benches/numpy_baseline.py [--k 1000,4000]
Needs numpy (benches/run.sh makes a venv under benches/.venv). Not used by cargo test.
"""
import argparse
import statistics
import sys
import time

import numpy as np


def softmax(t):
    e = np.exp(t - t.max())
    return e / e.sum()


def hessian(theta):
    p = softmax(theta)
    return np.diag(p) - np.outer(p, p)


def hvp(theta, v):
    p = softmax(theta)
    return p * v - (p @ v) * p


def timed(f):
    """Median of runs, at least 5 and about 2 s in all (as the Rust bench)."""
    t0 = time.perf_counter()
    f()
    first = time.perf_counter() - t0
    reps = min(max(int(2.0 / max(first, 1e-6)), 5), 200)
    ts = [first]
    for _ in range(reps - 1):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), reps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", default="1000,4000")
    args = ap.parse_args()
    print(f"numpy {np.__version__}, python {sys.version.split()[0]}")
    print()
    print("| formula | k | runs | NumPy (median) |")
    print("|---|---|---|---|")
    for k in [int(x) for x in args.k.split(",")]:
        i = np.arange(k)
        theta = ((i * 7919) % 1000) / 250.0 - 2.0
        v = ((i * 104729) % 1000) / 500.0 - 1.0
        t, n = timed(lambda: hessian(theta))
        print(f"| Hessian diag(p) − ppᵀ, p = softmax(θ) | {k} | {n} | {t * 1e3:.2f} ms |")
        t, n = timed(lambda: hvp(theta, v))
        print(f"| HVP p ⊙ v − (pᵀv) p, p = softmax(θ) | {k} | {n} | {t * 1e3:.3f} ms |")


if __name__ == "__main__":
    main()

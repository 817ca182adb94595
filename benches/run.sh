#!/usr/bin/env bash
# Runs every benchmark of the README's "Benchmarks" section and prints their tables.
#
#   benches/run.sh            # all: criterion, scaling, evaluator, NumPy, SymPy
#   QUICK=1 benches/run.sh    # smaller sizes (N ≤ 100, SymPy k ≤ 10): a few minutes
#
# The Python parts need numpy and sympy: they are installed in benches/.venv on first
# use (pip, from PyPI); set PYTHON to use another interpreter that has them, or
# NO_PYTHON=1 to skip them. Nothing here is needed by `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -n "${QUICK:-}" ]]; then
    SCALING_N=1,10,30,100; SYMPY_KS=5,10; EVAL_K=1000,4000; FAMILY_K=100
else
    SCALING_N=1,10,30,100,200,300; SYMPY_KS=5,10,20; EVAL_K=1000,4000; FAMILY_K=300
fi

echo "## criterion: cargo bench --bench derive"
cargo bench --locked --bench derive 2>&1 | grep -E '^[a-z].*|time:' | grep -v -E '^(Benchmarking|Found|Gnuplot)'

echo
echo "## scaling: derive time against N summed terms"
cargo bench --locked --bench scaling -- --n "$SCALING_N" --budget 200

echo
echo "## evaluator: derived Hessian and HVP of the seed loss"
cargo bench --locked --bench evaluator -- --k "$EVAL_K" --family-k "$FAMILY_K"

if [[ -n "${NO_PYTHON:-}" ]]; then exit 0; fi
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    if ! command -v python3 >/dev/null; then echo "(no python3: NumPy and SymPy parts skipped)"; exit 0; fi
    if [[ ! -x benches/.venv/bin/python ]]; then
        python3 -m venv benches/.venv
        benches/.venv/bin/pip install --quiet numpy sympy
    fi
    PY=benches/.venv/bin/python
fi

echo
echo "## NumPy baseline of the same formulas"
"$PY" benches/numpy_baseline.py --k "$EVAL_K"

echo
echo "## SymPy on the seed problem against the evolved process"
cargo build --locked --release --quiet
"$PY" benches/sympy_seed.py --ks "$SYMPY_KS"

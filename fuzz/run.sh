#!/usr/bin/env bash
# Fuzz the model parser (text -> model -> derivation, with `--at` values) and the
# rule-file parser, one target after another, each for a bounded time.
#
#   fuzz/run.sh [SECONDS] [TARGET...]     # default: 600 seconds each, targets `model` and `rules`
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). The corpora
# (fuzz/corpus/TARGET) are seeded from examples/*.ef and rules/*; a crash or a hang (an
# input taking more than 10 s) stops the run, leaves the input in fuzz/artifacts/TARGET/
# and makes this script exit non-zero. One fuzzing process at a time.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(model rules)

mkdir -p corpus/model corpus/rules
cp ../examples/*.ef ../rules/families.ef corpus/model/
printf '%s\n---\ntheta=[0.5,0.5]; q=[1,0]\n' "$(cat ../examples/softmax_cross_entropy.ef)" > corpus/model/seed-at.ef
cp ../rules/*.rules corpus/rules/

status=0
for t in "${targets[@]}"; do
    echo "== fuzzing $t for ${secs}s"
    cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -dict=model.dict -print_final_stats=1 \
        || { status=$?; echo "== $t: crash or hang, see fuzz/artifacts/$t/"; }
done
exit $status

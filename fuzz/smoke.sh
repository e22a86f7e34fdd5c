#!/usr/bin/env bash
# Builds the fuzz targets and runs each for SECONDS (60 by default): the
# smoke mode. Installs cargo-fuzz where it is missing; runs on the pinned
# stable toolchain without a sanitizer (-s none), so no nightly is needed.
#
#   fuzz/smoke.sh            # every target, 60 s each
#   fuzz/smoke.sh 10 paths   # one target, 10 s
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(manifest paths host_calls)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cargo fuzz build -s none
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "fuzzing $t for ${seconds}s"
    cargo fuzz run -s none "$t" "corpus/$t" -- -max_total_time="$seconds" -print_final_stats=1 2>&1 | grep -E "^(Done|stat::number_of_executed_units|==|thread|panicked|SUMMARY)" || true
    if [ -n "$(ls "artifacts/$t" 2>/dev/null)" ]; then
        echo "fuzz target $t found a failing input: fuzz/artifacts/$t" >&2
        exit 1
    fi
done

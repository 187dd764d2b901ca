#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ and runs each one briefly
# on its committed corpus (fuzz/corpus/<target>). Fails on any crash, panic,
# sanitizer report, leak or hang. Long runs and their results: RELIABILITY.md.
#
#   scripts/fuzz-smoke.sh                  # every target, FUZZ_SECONDS each (13)
#   FUZZ_SECONDS=60 scripts/fuzz-smoke.sh tlv vpcd_frames
#
# Works on stable Rust: cargo-fuzz passes nightly-only flags
# (-Zsanitizer=address, ...), which RUSTC_BOOTSTRAP=1 lets stable accept.
# Installs cargo-fuzz when it is missing. New inputs go to a scratch copy
# of the corpus, so the work tree stays clean; crash inputs land in
# fuzz/artifacts/<target>/ (git-ignored).
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
SECONDS_EACH="${FUZZ_SECONDS:-13}"
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(apdu_sequence tlv card_file vpcd_frames cache_items secure_messaging)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

if [ $# -eq 0 ]; then
    cargo fuzz build
else
    for t in "${TARGETS[@]}"; do cargo fuzz build "$t"; done
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in "${TARGETS[@]}"; do
    mkdir -p "$scratch/$t"
    seeds=()
    [ -d "corpus/$t" ] && seeds+=("corpus/$t")
    echo "fuzz-smoke: $t for ${SECONDS_EACH}s" >&2
    if ! cargo fuzz run "$t" "$scratch/$t" "${seeds[@]}" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -print_final_stats=1 \
        >"$scratch/$t.log" 2>&1; then
        tail -n 60 "$scratch/$t.log" >&2
        failed+=("$t")
    else
        grep -E '^#[0-9]+[[:space:]]+DONE' "$scratch/$t.log" | sed "s/^/fuzz-smoke: $t: /" >&2 || true
    fi
    # Inputs kept from earlier findings must not crash again.
    if [ -d "regressions/$t" ] && [ -n "$(ls -A "regressions/$t")" ]; then
        if ! cargo fuzz run "$t" regressions/"$t"/* -- -runs=1 >"$scratch/$t.reg.log" 2>&1; then
            tail -n 60 "$scratch/$t.reg.log" >&2
            failed+=("$t (regressions)")
        fi
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz-smoke: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz-smoke: all ${#TARGETS[@]} targets ran ${SECONDS_EACH}s each without a finding" >&2

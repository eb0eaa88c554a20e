#!/usr/bin/env bash
# Coverage-guided fuzzing of the request-head parser, the frame decoder,
# the chat handler and the admin API with cargo-fuzz (libFuzzer), each for
# a bounded time.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]    (default 60, all targets)
#
# Targets: http_head, frame_decoder, chat_message, admin_body (fuzz/fuzz_targets/).
# Seeds come from fuzz/corpus/TARGET (committed); inputs libFuzzer finds
# are kept in fuzz/work/TARGET (ignored by git) so later runs resume from
# them. A crash leaves its input in fuzz/artifacts/TARGET/ and is printed as
# hex; reproduce it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -s none -a TARGET fuzz/artifacts/TARGET/crash-...
# (from the repository root or fuzz/).
#
# Works on stable Rust: cargo-fuzz needs a few nightly-only flags, which
# RUSTC_BOOTSTRAP=1 unlocks on a stable compiler (set here unless the
# active toolchain is a nightly). The code under test has no `unsafe`, so
# targets are built without a sanitizer (`-s none`, several times faster)
# but with debug assertions and overflow checks; FUZZ_SANITIZER=address
# turns AddressSanitizer on. FUZZ_ARGS adds libFuzzer flags.
#
# The machine is shared: run it niced, e.g. `nice -n 19 scripts/fuzz.sh 300`.
# Prints executions, speed, coverage and crashes per target and a final
# `N passed, N failed` line; exits 1 if any target crashed or failed.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(http_head frame_decoder chat_message admin_body)
fi
case $seconds in
'' | *[!0-9]* | 0)
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
    ;;
esac
sanitizer=${FUZZ_SANITIZER:-none}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
fi
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

cd fuzz
echo "fuzz: building ${targets[*]} (sanitizer: $sanitizer)"
if [ $# -eq 0 ]; then
    cargo fuzz build -s "$sanitizer" -a
else
    for target in "${targets[@]}"; do
        cargo fuzz build -s "$sanitizer" -a "$target"
    done
fi

passed=0
failed=0
summary=()
for target in "${targets[@]}"; do
    work="$root/fuzz/work/$target"
    artifacts="$root/fuzz/artifacts/$target"
    log="$root/fuzz/work/$target.log"
    mkdir -p "$work" "$artifacts"
    known=$(find "$artifacts" -type f | sort)
    echo "fuzz: running $target for ${seconds}s (log: fuzz/work/$target.log)"
    dict=()
    if [ -s "$root/fuzz/dict/$target.dict" ]; then
        dict=(-dict="$root/fuzz/dict/$target.dict")
    fi
    status=0
    # cargo fuzz puts crash inputs in fuzz/artifacts/TARGET/ itself.
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    cargo fuzz run -s "$sanitizer" -a "$target" "$work" "$root/fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 "${dict[@]}" \
        -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
    new=$(comm -13 <(echo "$known") <(find "$artifacts" -type f | sort) | sed '/^$/d')
    crashes=$(echo -n "$new" | grep -c . || true)
    line="$target: ${execs:-?} execs, ${speed:-?} execs/s, cov ${cov:-?} edges, ft ${ft:-?}, corpus ${corp:-?}, peak RSS ${rss:-?} MB, $crashes new crash(es), exit $status"
    echo "fuzz: $line"
    summary+=("$line")
    if [ "$status" -eq 0 ] && [ "$crashes" -eq 0 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        if grep -qE 'panicked at|^SUMMARY|^==[0-9]+==ERROR|deadly signal|Test unit written' "$log"; then
            grep -E -A3 'panicked at' "$log" | head -8 || true
            grep -E '^SUMMARY|^==[0-9]+==ERROR|deadly signal|Test unit written' "$log" | head -5 || true
        else
            tail -15 "$log"
        fi
        for f in $new; do
            echo "fuzz: crash input $f ($(stat -c %s "$f") bytes):"
            od -An -tx1 -v "$f" | head -20 || true
        done
    fi
done

echo
echo "fuzz summary (${seconds}s per target):"
printf '  %s\n' "${summary[@]}"
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

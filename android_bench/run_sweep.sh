#!/bin/sh
# Run a benchmark_model sweep ON the phone: every model x delegate x thread count (x repeat).
#
# POSIX sh only (Android's /system/bin/sh is mksh, toybox supplies the tools).
# Each run writes its raw log to OUT_DIR/logs/, the device state read before and after it
# to OUT_DIR/state/<log name>.before.txt / .after.txt, and one tab-separated line to
# OUT_DIR/results.tsv:   model  delegate  threads  exit_code  log (relative to OUT_DIR)
# The host pulls OUT_DIR and parses the logs (mobilekit bench-parse, or
# mobilekit.bench.benchmark_model.read_sweep). See android_bench/README.md.
# Lines go to OUT_DIR/results.tsv.partial as runs finish; it becomes results.tsv at the end.
# Interrupted (Ctrl-C, kill, hang-up): the running benchmark is ended, the finished lines stay,
# and the command that continues is printed. -R (RESUME=1) continues a killed or interrupted
# sweep in OUT_DIR: configurations already in its results are skipped.
#
# Usage:
#   run_sweep.sh [-b BENCHMARK_MODEL] [-d DELEGATES] [-t THREADS] [-o OUT_DIR] [-m CPU_MASK]
#                [-r NUM_RUNS] [-w WARMUP_RUNS] [-s MIN_SECS] [-n REPEATS] [-c COOLDOWN_SECS]
#                [-R] MODEL.tflite...
# Every option can also come from the environment variable named in capitals above.
# Example (from the host):
#   adb push android_bench/run_sweep.sh /data/local/tmp/mobilekit/
#   adb shell sh /data/local/tmp/mobilekit/run_sweep.sh -d "cpu xnnpack gpu" -t "1 4" \
#       -m f0 /data/local/tmp/mobilekit/mnv2.tflite /data/local/tmp/mobilekit/mnv3s.tflite
#   adb pull /data/local/tmp/mobilekit/sweep ./sweep
# Over a flaky cable, detach it from adb:  adb shell 'nohup sh .../run_sweep.sh ... &'

BENCHMARK_MODEL=${BENCHMARK_MODEL:-/data/local/tmp/mobilekit/benchmark_model}
DELEGATES=${DELEGATES:-"cpu xnnpack"}
THREADS=${THREADS:-"1 4"}
OUT_DIR=${OUT_DIR:-/data/local/tmp/mobilekit/sweep}
CPU_MASK=${CPU_MASK:-}
NUM_RUNS=${NUM_RUNS:-50}
WARMUP_RUNS=${WARMUP_RUNS:-1}
MIN_SECS=${MIN_SECS:-1}
REPEATS=${REPEATS:-1}
COOLDOWN=${COOLDOWN:-0}
EXTRA_FLAGS=${EXTRA_FLAGS:-}
RESUME=${RESUME:-0}

quote() {  # one shell word, single-quoted
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}
args_text=""
for arg in "$@"; do
    args_text="$args_text $(quote "$arg")"
done

usage() {
    sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

die() {
    echo "run_sweep.sh: error: $*" >&2
    exit 2
}

while getopts 'b:d:t:o:m:r:w:s:n:c:Rh' opt; do
    case $opt in
        b) BENCHMARK_MODEL=$OPTARG ;;
        d) DELEGATES=$OPTARG ;;
        t) THREADS=$OPTARG ;;
        o) OUT_DIR=$OPTARG ;;
        m) CPU_MASK=$OPTARG ;;
        r) NUM_RUNS=$OPTARG ;;
        w) WARMUP_RUNS=$OPTARG ;;
        s) MIN_SECS=$OPTARG ;;
        n) REPEATS=$OPTARG ;;
        c) COOLDOWN=$OPTARG ;;
        R) RESUME=1 ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))

[ $# -gt 0 ] || die "no model given (pass one or more pushed .tflite files)"
[ -f "$BENCHMARK_MODEL" ] || die "benchmark binary '$BENCHMARK_MODEL' does not exist"
[ -x "$BENCHMARK_MODEL" ] || die "benchmark binary '$BENCHMARK_MODEL' is not executable (chmod 755 it)"
for model in "$@"; do
    [ -f "$model" ] || die "model '$model' does not exist"
done

is_count() {  # a whole number >= $2
    case $1 in ''|*[!0-9]*) return 1 ;; esac
    [ "$1" -ge "$2" ]
}
for t in $THREADS; do
    is_count "$t" 1 || die "thread count must be an integer >= 1; got '$t'"
done
is_count "$NUM_RUNS" 1 || die "NUM_RUNS must be an integer >= 1; got '$NUM_RUNS'"
is_count "$WARMUP_RUNS" 0 || die "WARMUP_RUNS must be an integer >= 0; got '$WARMUP_RUNS'"
is_count "$REPEATS" 1 || die "REPEATS must be an integer >= 1; got '$REPEATS'"

# delegate name -> benchmark_model flag (cpu = reference kernels: XNNPACK is on by default)
delegate_flag() {
    case $1 in
        cpu) echo "--use_xnnpack=false" ;;
        xnnpack) echo "--use_xnnpack=true" ;;
        gpu) echo "--use_gpu=true" ;;
        nnapi) echo "--use_nnapi=true" ;;
        *) return 1 ;;
    esac
}
for d in $DELEGATES; do
    delegate_flag "$d" >/dev/null || die "unknown delegate '$d'; accepted: cpu, xnnpack, gpu, nnapi"
done

# Pin to the CPUs in CPU_MASK (hex, e.g. f0 = cpus 4-7) when given. Only ever called as a
# background job: the exec makes the job's pid the benchmark's, so a trap can end it.
exec_pinned() {
    if [ -n "$CPU_MASK" ]; then
        exec taskset "$CPU_MASK" "$@"
    else
        exec "$@"
    fi
}

# Device state before and after each run: cpufreq, cpu_capacity, thermal zones, dumpsys
# battery / thermalservice, emulator props. A subshell: its variables stay inside.
dump_state() (
# >>> state script: identical to mobilekit/bench/device_state.py STATE_SCRIPT
S=${MOBILEKIT_SYSFS:-/sys}
r() { if v=$(cat "$1" 2>/dev/null) && [ -n "$v" ]; then echo "$2=$v"; else echo "$2=?"; fi; }
r "$S/devices/system/cpu/online" online
for d in "$S"/devices/system/cpu/cpu[0-9]*; do
  [ -d "$d" ] || continue
  n=${d##*/cpu}
  r "$d/cpufreq/scaling_cur_freq" "cpu$n.cur_khz"
  r "$d/cpufreq/scaling_min_freq" "cpu$n.min_khz"
  r "$d/cpufreq/scaling_max_freq" "cpu$n.max_khz"
  r "$d/cpufreq/cpuinfo_max_freq" "cpu$n.hw_max_khz"
  r "$d/cpufreq/scaling_governor" "cpu$n.governor"
  r "$d/cpu_capacity" "cpu$n.capacity"
done
for z in "$S"/class/thermal/thermal_zone[0-9]*; do
  [ -d "$z" ] || continue
  n=${z##*thermal_zone}
  r "$z/type" "zone$n.type"
  r "$z/temp" "zone$n.temp"
done
for p in ro.kernel.qemu ro.boot.qemu ro.hardware; do
  echo "prop.$p=$(getprop "$p" 2>/dev/null)"
done
echo '### battery'
dumpsys battery 2>&1 | head -n 40
echo '### thermalservice'
dumpsys thermalservice 2>&1 | head -n 60
echo '### end'
# <<< state script
)

safe_name() {  # a file-name-safe stem of a model path
    base=${1##*/}
    printf '%s' "${base%.tflite}" | tr -c 'A-Za-z0-9._-' '_'
}

mkdir -p "$OUT_DIR/logs" "$OUT_DIR/state" || die "cannot create '$OUT_DIR/logs'"
results="$OUT_DIR/results.tsv"
partial="$results.partial"
tab=$(printf '\t')
if [ "$RESUME" = 1 ] && [ ! -f "$partial" ] && [ -f "$results" ]; then
    mv -f "$results" "$partial" || die "cannot rename '$results' to '$partial'"
fi
if [ "$RESUME" = 1 ] && [ -f "$partial" ]; then
    echo "resuming: $(grep -vc '^#' "$partial") run(s) already in $partial" >&2
else
    printf '# model%sdelegate%sthreads%sexit_code%slog\n' "$tab" "$tab" "$tab" "$tab" > "$partial" \
        || die "cannot write '$partial'"
fi

done_before() {  # is this run's log already recorded (a resumed sweep)?
    cut -f5 "$partial" | grep -Fqx "$1"
}

# Ctrl-C / kill / hang-up: end the running benchmark (a background job ignores SIGINT, so it
# is killed here), keep the finished lines and say how to continue.
child=
interrupted() {
    if [ -n "$child" ]; then
        kill -9 "$child" 2>/dev/null
        wait "$child" 2>/dev/null
    fi
    echo "run_sweep.sh: interrupted ($1) after $done_runs of $total runs; finished lines are in $partial" >&2
    echo "resume with: sh $(quote "$0") -R$args_text" >&2
    exit 130
}
trap 'interrupted INT' INT
trap 'interrupted TERM' TERM
trap 'interrupted HUP' HUP

count_words() { echo $#; }
# shellcheck disable=SC2086
total=$(( $# * $(count_words $DELEGATES) * $(count_words $THREADS) * REPEATS ))

n=0
done_runs=0
for model in "$@"; do
    stem=$(safe_name "$model")
    for delegate in $DELEGATES; do
        dflag=$(delegate_flag "$delegate")
        for threads in $THREADS; do
            rep=1
            while [ "$rep" -le "$REPEATS" ]; do
                n=$((n + 1))
                log="logs/${stem}__${delegate}__t${threads}__r${rep}.log"
                if done_before "$log"; then
                    echo "[$n/$total] $stem $delegate t$threads r$rep: done before, skipped" >&2
                    done_runs=$((done_runs + 1))
                    rep=$((rep + 1))
                    continue
                fi
                state="state/${stem}__${delegate}__t${threads}__r${rep}"
                dump_state > "$OUT_DIR/$state.before.txt" 2>&1
                # EXTRA_FLAGS is split into words on purpose: one flag per word.
                # In the background so that a trap can end it at once.
                # shellcheck disable=SC2086
                exec_pinned "$BENCHMARK_MODEL" "--graph=$model" "$dflag" \
                    "--num_threads=$threads" "--num_runs=$NUM_RUNS" \
                    "--warmup_runs=$WARMUP_RUNS" "--min_secs=$MIN_SECS" $EXTRA_FLAGS \
                    > "$OUT_DIR/$log" 2>&1 &
                child=$!
                wait "$child"
                rc=$?
                dump_state > "$OUT_DIR/$state.after.txt" 2>&1
                child=
                printf '%s\t%s\t%s\t%s\t%s\n' "$model" "$delegate" "$threads" "$rc" "$log" >> "$partial"
                done_runs=$((done_runs + 1))
                echo "[$n/$total] $stem $delegate t$threads r$rep: exit $rc" >&2
                if [ "$n" -lt "$total" ] && [ "$COOLDOWN" != 0 ]; then
                    sleep "$COOLDOWN" &
                    child=$!
                    wait "$child"
                    child=
                fi
                rep=$((rep + 1))
            done
        done
    done
done

mv -f "$partial" "$results" || die "cannot rename '$partial' to '$results'"
echo "results: $results" >&2

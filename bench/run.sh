#!/usr/bin/env bash
# The faas benchmark, in one command: builds faas and the baseline in release mode, runs faas
# against the same handlers forked and exec'd with no sandbox (bench/baseline), and writes
# bench/results/LATEST.md (and LATEST.json, and the chart warm.svg). Run as root: `bash bench/run.sh`.
# Python runs three ways: warm (a zygote forks each request: the default), cold (`warm = false`)
# and on the baseline; `numpy` is a handler that imports numpy, warm with `preload = ["numpy"]`.
# Knobs (environment): BENCH_SECONDS (3), BENCH_ROUNDS (3), BENCH_CONCURRENCY ("1 2 8 64"),
# BENCH_HANDLERS ("sh python node numpy"), BENCH_NUMPY_CONCURRENCY ("1 8"), BENCH_HOLD ("1 8":
# requests held at once for the memory per request), BENCH_SEQUENTIAL (500), BENCH_CONNECTIONS (1000),
# BENCH_PROFILE (1: perf trace + perf record if perf is there), BENCH_WARM_PROFILE (1: a warm
# request's set-up phase by phase, bench/zygote_timed.py), BENCH_FAAS_PORT (18480),
# BENCH_BASELINE_PORT (18481), BENCH_TARGET_DIR (/tmp/bench-target), BENCH_BEFORE (a git
# revision: build it too and run it as a third server in the same rounds), BENCH_BEFORE_PORT
# (18483). See bench/README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
seconds=${BENCH_SECONDS:-3}
rounds=${BENCH_ROUNDS:-3}
read -r -a concs <<< "${BENCH_CONCURRENCY:-1 2 8 64}"
read -r -a handlers <<< "${BENCH_HANDLERS:-sh python node numpy}"
read -r -a numpy_concs <<< "${BENCH_NUMPY_CONCURRENCY:-1 8}"
read -r -a holds <<< "${BENCH_HOLD:-1 8}"
seq_n=${BENCH_SEQUENTIAL:-500}
conns=${BENCH_CONNECTIONS:-1000}
profile=${BENCH_PROFILE:-1}
warm_profile=${BENCH_WARM_PROFILE:-1}
faas_port=${BENCH_FAAS_PORT:-18480}
base_port=${BENCH_BASELINE_PORT:-18481}
trace_port=$((faas_port + 2))
target=${BENCH_TARGET_DIR:-/tmp/bench-target}
before=${BENCH_BEFORE:-}
before_port=${BENCH_BEFORE_PORT:-$((faas_port + 3))}
fn_concurrency=64
wide_concurrency=1024
max_c=0
for c in "${concs[@]}"; do ((c > max_c)) && max_c=$c; done

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root: faas needs it to build sandboxes"
command -v curl >/dev/null || die "curl not found: apt-get install curl"
command -v python3 >/dev/null || die "python3 not found"
for h in "${handlers[@]}"; do
    case $h in
        python) [[ -x /usr/bin/python3 ]] || die "/usr/bin/python3 not found (set BENCH_HANDLERS without python)" ;;
        numpy)
            if ! /usr/bin/python3 -c 'import numpy' 2>/dev/null; then
                log "installing the preload handler's module: apt-get install python3-numpy (once)"
                { apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-numpy >/dev/null; } ||
                    die "python3-numpy could not be installed (set BENCH_HANDLERS without numpy)"
            fi
            ;;
        node) [[ -x /usr/bin/node ]] || die "/usr/bin/node not found (set BENCH_HANDLERS without node)" ;;
        sh) ;;
        *) die "unknown handler $h (sh, python, node, numpy)" ;;
    esac
done
if ! command -v oha >/dev/null; then
    [[ -x $HOME/.cargo/bin/oha ]] && export PATH=$HOME/.cargo/bin:$PATH
fi
if ! command -v oha >/dev/null; then
    log "installing the load generator: cargo install oha --locked (once; takes a few minutes)"
    cargo install oha --locked --quiet
    export PATH=$HOME/.cargo/bin:$PATH
fi
if [[ $profile == 1 ]] && ! command -v perf >/dev/null; then
    log "perf not found; trying apt-get install linux-perf (BENCH_PROFILE=0 skips profiling)"
    apt-get install -y -qq linux-perf >/dev/null 2>&1 || { log "no perf: skipping the profile"; profile=0; }
fi

# Many connections, and many pipes in the daemon.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# The tree being measured, taken before the build (others may commit while we run).
rev=$(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(cd "$repo" && git status --porcelain -- src Cargo.toml Cargo.lock wrappers 2>/dev/null | wc -l)
[[ $dirty != 0 ]] && rev="$rev + uncommitted changes in $dirty file(s) under src/, wrappers/, Cargo.*"
log "building faas $rev (release, CARGO_TARGET_DIR=$target)"
(cd "$repo" && CARGO_TARGET_DIR=$target cargo build --release --quiet)
log "building the baseline (release)"
(cd "$here/baseline" && CARGO_TARGET_DIR=$target/baseline cargo build --release --quiet)
faas=$target/release/faas
baseline=$target/baseline/release/baseline

# BENCH_BEFORE: the same faas at an older revision, for the cost of what changed since. Its
# tree is exported with `git archive` (no worktree, nothing in the repository) and built with
# a target dir of its own under the bench target dir, both kept for the next run.
sides=(faas baseline)
if [[ -n $before ]]; then
    before_sha=$(cd "$repo" && git rev-parse --verify --quiet "$before^{commit}") || die "BENCH_BEFORE=$before is not a commit of $repo"
    before_rev=$(cd "$repo" && git rev-parse --short "$before_sha")
    before_src=$target/before/src-$before_sha
    before_target=$target/before/target
    if [[ ! -f $before_src/.exported ]]; then
        rm -rf "$before_src"
        mkdir -p "$before_src"
        (cd "$repo" && git archive "$before_sha") | tar -x -C "$before_src"
        touch "$before_src/.exported"
    fi
    # Seed its dependencies from the build above: a first build then compiles only faas.
    if [[ ! -d $before_target/release && -d $target/release/deps ]]; then
        mkdir -p "$before_target"
        cp -a "$target/release" "$before_target/"
    fi
    log "building faas $before_rev (BENCH_BEFORE, release, CARGO_TARGET_DIR=$before_target)"
    (cd "$before_src" && CARGO_TARGET_DIR=$before_target cargo build --release --locked --quiet)
    before_faas=$before_target/release/faas
    sides=(faas before baseline)
fi

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
work=$(mktemp -d /tmp/faas-bench.XXXXXX)
raw=$work/raw
mkdir -p "$raw" "$work/functions" "$work/functions-before" "$work/state" "$work/state-trace" "$work/state-spans"
# The marker directory the `hold` handler waits on: a sandbox sees it read-only at the same path
# ([sandbox] read_only); under /var/tmp because /tmp is the sandbox's own.
hold_dir=$(mktemp -d /var/tmp/faas-bench-hold.XXXXXX)
chmod 755 "$hold_dir"
pids=()
cleanup() {
    local rc=$?
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$hold_dir"
    if [[ $rc != 0 ]]; then
        log "failed (exit $rc); logs kept in $work"
    elif [[ ${BENCH_KEEP:-0} == 1 ]]; then
        log "logs and raw results kept in $work (BENCH_KEEP=1; report.py $work/raw … rewrites the report)"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The functions: the same handler files for faas and the baseline.
handlers_dir=$here/handlers
# admin_on_public: the bench reads /_/functions (zygote state, pid, RSS) on its one listener.
# [warm] idle_exit = "0": no zygote stops between its load runs and its sequential requests.
cat > "$work/faas.toml" <<EOF
max_concurrency = 4096
admin_on_public = true
[limits]
concurrency = $fn_concurrency
[warm]
idle_exit = "0"
EOF
cat > "$work/functions/sh.toml" <<EOF
runtime = "sh"
code = "$handlers_dir/sh"
handler = "hello.sh"
EOF
cat > "$work/functions/sh-wide.toml" <<EOF
runtime = "sh"
code = "$handlers_dir/sh"
handler = "hello.sh"
[limits]
concurrency = $wide_concurrency
EOF
cat > "$work/functions/python.toml" <<EOF
runtime = "python"
code = "$repo/config/functions/hello"
handler = "main.handle"
EOF
cat > "$work/functions/node.toml" <<EOF
runtime = "node"
code = "$handlers_dir/node"
handler = "main.handle"
EOF
cat > "$work/functions/numpy.toml" <<EOF
runtime = "python"
code = "$handlers_dir/numpy"
handler = "main.handle"
EOF
cat > "$work/functions/hold.toml" <<EOF
runtime = "python"
code = "$handlers_dir/hold"
handler = "main.handle"
[sandbox]
read_only = ["$hold_dir"]
EOF
# An older faas (BENCH_BEFORE) knows no warm keys: its function files are these, without them.
cp "$work"/functions/*.toml "$work/functions-before/"
rm "$work/functions-before/hold.toml"
# Python functions are warm by default; each gets a cold twin NAME-cold (`warm = false`). numpy
# is warm with the module pre-imported in its zygote; its cold twin imports it in every request.
for f in python numpy hold; do
    {
        cat "$work/functions/$f.toml"
        grep -q '^\[sandbox\]' "$work/functions/$f.toml" || echo '[sandbox]'
        echo 'warm = false'
    } > "$work/functions/$f-cold.toml"
done
printf '[sandbox]\npreload = ["numpy"]\n' >> "$work/functions/numpy.toml"
# The older faas's numpy is preloaded too where it knows the key: without it, its zygote left
# `import numpy` to every request, and the before/after row compared nothing.
if [[ -n $before ]] && grep -q 'preload:' "$before_src/src/function.rs" 2>/dev/null; then
    cp "$work/functions/numpy.toml" "$work/functions-before/numpy.toml"
fi
faas_args=(--config "$work/faas.toml" --functions "$work/functions" --wrappers "$repo/wrappers")
if [[ -n $before ]]; then
    # The same settings and functions, its own wrappers and a uid range of its own: an older
    # faas may not know how to keep out of another daemon's uids.
    # (Top-level keys, so before the [limits] table.) Without the keys an older faas may not
    # know: admin_on_public and [warm].
    { printf 'uid_base = %d\nuid_count = 65536\n' $((0x70000000 + 65536)); sed '/^admin_on_public/d; /^\[warm\]/,$d' "$work/faas.toml"; } > "$work/faas-before.toml"
    before_args=(--config "$work/faas-before.toml" --functions "$work/functions-before" --wrappers "$before_src/wrappers")
fi

wait_health() { # PORT
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$1/_/health" 2>/dev/null && return 0
        sleep 0.1
    done
    die "nothing answers on 127.0.0.1:$1"
}
status_kb() { # PID FIELD
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}
sample_rss() { # PID OUT: max VmRSS while running, until killed
    local max=0 v
    trap 'echo "$max" > "$2"; exit 0' TERM
    echo 0 > "$2"
    while :; do
        v=$(status_kb "$1" VmRSS 2>/dev/null || echo 0)
        ((v > max)) && max=$v && echo "$max" > "$2"
        sleep 0.1
    done
}
oha_run() { # OUT_JSON CONCURRENCY URL [MILLISECONDS]
    oha --no-tui --output-format json -z "${4:-$((seconds * 1000))}ms" -w -c "$2" "$3" > "$1" 2> "$1.err" || {
        log "oha failed for $3 at c=$2: $(head -c 300 "$1.err")"
        return 0
    }
}

log "faas doctor"
"$faas" "${faas_args[@]}" --state-dir "$work/state" doctor > "$raw/doctor.txt" 2>&1 || true
"$faas" "${faas_args[@]}" --state-dir "$work/state" check > "$raw/check.txt" 2>&1 || die "faas check failed: $(cat "$raw/check.txt")"
if [[ -n $before ]]; then
    mkdir -p "$work/state-before"
    "$before_faas" "${before_args[@]}" --state-dir "$work/state-before" doctor > "$raw/doctor-before.txt" 2>&1 || true
    "$before_faas" "${before_args[@]}" --state-dir "$work/state-before" check > "$raw/check-before.txt" 2>&1 || die "faas $before_rev check failed: $(cat "$raw/check-before.txt")"
fi

log "starting faas on 127.0.0.1:$faas_port and the baseline on 127.0.0.1:$base_port"
"$faas" "${faas_args[@]}" --state-dir "$work/state" serve --listen "127.0.0.1:$faas_port" 2> "$work/faas.log" &
faas_pid=$!
pids+=("$faas_pid")
specs=(sh=sh:"$handlers_dir/sh":hello.sh python=python:"$repo/config/functions/hello":main.handle node=node:"$handlers_dir/node":main.handle
    numpy=python:"$handlers_dir/numpy":main.handle hold=python:"$handlers_dir/hold":main.handle)
"$baseline" --listen "127.0.0.1:$base_port" --wrappers "$repo/wrappers" "${specs[@]}" 2> "$work/baseline.log" &
base_pid=$!
pids+=("$base_pid")
if [[ -n $before ]]; then
    log "starting faas $before_rev (BENCH_BEFORE) on 127.0.0.1:$before_port"
    "$before_faas" "${before_args[@]}" --state-dir "$work/state-before" serve --listen "127.0.0.1:$before_port" 2> "$work/before.log" &
    before_pid=$!
    pids+=("$before_pid")
    wait_health "$before_port"
fi
wait_health "$faas_port"
wait_health "$base_port"
sleep 1
idle_rss=$(status_kb "$faas_pid" VmRSS)
idle_hwm=$(status_kb "$faas_pid" VmHWM)

port_of() { # SIDE
    case $1 in
        faas | cold) echo "$faas_port" ;;
        before) echo "$before_port" ;;
        baseline) echo "$base_port" ;;
    esac
}
# The function a side calls for a handler: `cold` is the handler's cold twin on the same faas.
fn_of() { # HANDLER SIDE
    if [[ $2 == cold ]]; then echo "$1-cold"; else echo "$1"; fi
}
is_python() { [[ $1 == python || $1 == numpy ]]; }
# The sides of one handler: for Python ones, faas is warm and `cold` is its warm = false twin.
sides_of() { # HANDLER
    if is_python "$1"; then
        echo "${sides[@]:0:1}" cold "${sides[@]:1}"
    else
        echo "${sides[@]}"
    fi
}
concs_of() { # HANDLER
    if [[ $1 == numpy ]]; then echo "${numpy_concs[@]}"; else echo "${concs[@]}"; fi
}
for h in "${handlers[@]}"; do
    for side in $(sides_of "$h"); do
        port=$(port_of "$side") fn=$(fn_of "$h" "$side")
        code=$(curl -s -o "$work/probe.out" -w '%{http_code}' "http://127.0.0.1:$port/$fn")
        [[ $code == 200 ]] || die "GET /$fn on port $port answered $code: $(head -c 300 "$work/probe.out")"
        python3 "$here/timing.py" 127.0.0.1 "$port" "/$fn" 10 > /dev/null
    done
done

# Warm functions: the first request of a function version is cold and starts its zygote (the
# probes above made it); wait until /_/functions says the zygote is ready, with a deadline.
zygote_json="{"
warm_fns=()
for h in "${handlers[@]}"; do is_python "$h" && warm_fns+=("$h"); done
((${#warm_fns[@]})) && warm_fns+=(hold)
for fn in "${warm_fns[@]}"; do
    path=/$fn
    [[ $fn == hold ]] && path="/hold?dir=$hold_dir" && touch "$hold_dir/release"
    log "warming $fn: one request, then waiting for its zygote"
    python3 "$here/warm.py" ready "http://127.0.0.1:$faas_port" "$fn" "$path" 60 > "$work/ready-$fn.json" || die "$fn's zygote did not get ready: see $work/faas.log"
    rm -f "$hold_dir/release"
    [[ $fn == hold ]] && continue
    python3 "$here/timing.py" 127.0.0.1 "$faas_port" "/$fn" 5 > /dev/null
    zygote_json+="\"$fn\": $(python3 "$here/warm.py" zygote "http://127.0.0.1:$faas_port" "$fn"),"
done

mem_json="{\"idle_rss_kb\": $idle_rss, \"idle_hwm_kb\": $idle_hwm"
[[ -n $before ]] && mem_json+=", \"before_idle_rss_kb\": $(status_kb "$before_pid" VmRSS)"
# Each (handler, concurrency) gets BENCH_SECONDS per side, cut into BENCH_ROUNDS rounds that
# alternate faas, baseline, faas, …: a burst of other work on the machine then hits both.
# With three sides (a cold twin, or BENCH_BEFORE) each round starts one later (faas cold
# baseline, cold baseline faas, …), so no side always follows the same one.
round_order() { # ROUND SIDE...
    local r=$1
    shift
    local s=("$@")
    if ((${#s[@]} < 3)); then
        echo "${s[@]}"
        return
    fi
    local k=$(( (r - 1) % ${#s[@]} ))
    echo "${s[@]:k}" "${s[@]:0:k}"
}
# The REPORT lines (set-up time, warm or cold) a faas logged for one function during one run,
# as "SETUP_US START MEMORY_PEAK" lines: the log's bytes between two offsets.
log_size() { stat -c %s "$1"; }
reports() { # LOG FROM TO FUNCTION
    tail -c "+$(($2 + 1))" "$1" | head -c "$(($3 - $2))" | grep -a "^<[0-9]>REPORT $4 " \
        | sed -nE 's/.* setup=([0-9]+)us start=([a-z]+) cpu_us=[^ ]+ memory_peak=([^ ]+).*/\1 \2 \3/p' || true
}
log_of() { # SIDE
    case $1 in
        before) echo "$work/before.log" ;;
        *) echo "$work/faas.log" ;;
    esac
}
round_ms=$(( seconds * 1000 / rounds ))
total_runs=0
for h in "${handlers[@]}"; do
    read -r -a hs <<< "$(sides_of "$h")"
    read -r -a hc <<< "$(concs_of "$h")"
    total_runs=$(( total_runs + ${#hs[@]} * ${#hc[@]} * rounds ))
done
run=0
for h in "${handlers[@]}"; do
    for c in $(concs_of "$h"); do
        for r in $(seq "$rounds"); do
            for side in $(round_order "$r" $(sides_of "$h")); do
                run=$((run + 1))
                port=$(port_of "$side") fn=$(fn_of "$h" "$side")
                log "[$run/$total_runs] $h $side c=$c round $r/$rounds (${round_ms}ms)"
                echo "$h $side $c $r $(cut -d' ' -f1 /proc/loadavg)" >> "$raw/loadavg.txt"
                sampler=
                if [[ $side == faas && $c == "$max_c" ]]; then
                    sample_rss "$faas_pid" "$work/rss-$h-$r" &
                    sampler=$!
                fi
                from=$(log_size "$(log_of "$side")")
                oha_run "$raw/load-$h-$side-c$c-r$r.json" "$c" "http://127.0.0.1:$port/$fn" "$round_ms"
                if [[ $side != baseline ]]; then
                    reports "$(log_of "$side")" "$from" "$(log_size "$(log_of "$side")")" "$fn" > "$raw/reports-$h-$side-c$c-r$r.txt"
                fi
                if [[ -n $sampler ]]; then
                    kill -TERM "$sampler"
                    wait "$sampler" 2>/dev/null || true
                fi
                sleep 0.3
            done
        done
        if [[ $c == "$max_c" && -e $work/rss-$h-1 ]]; then
            max_rss=$(sort -n "$work"/rss-"$h"-* | tail -1)
            mem_json+=", \"c64_$h\": {\"max_rss_kb\": $max_rss, \"hwm_kb\": $(status_kb "$faas_pid" VmHWM)}"
        fi
    done
done

# Zygotes after the load (their RSS may grow as they serve), and the memory each concurrent
# request adds: N requests held at once on a marker, the request processes' smaps_rollup read
# while they wait (bench/warm.py hold), warm, cold and on the baseline.
if ((${#warm_fns[@]})); then
    for fn in "${warm_fns[@]}"; do
        [[ $fn == hold ]] && continue
        zygote_json+="\"$fn-after\": $(python3 "$here/warm.py" zygote "http://127.0.0.1:$faas_port" "$fn"),"
    done
    hold_zygote=$(python3 "$here/warm.py" zygote "http://127.0.0.1:$faas_port" hold)
    hold_zpid=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get("pid") or 0)' "$hold_zygote")
    zygote_json+="\"hold\": $hold_zygote, \"held\": {"
    for n in "${holds[@]}"; do
        for side in faas cold baseline; do
            log "memory: $n request(s) held at once, $side"
            case $side in
                faas) url="http://127.0.0.1:$faas_port/hold" parent=$hold_zpid flag=--nonzero-uid ;;
                cold) url="http://127.0.0.1:$faas_port/hold-cold" parent=$faas_pid flag=--nonzero-uid ;;
                baseline) url="http://127.0.0.1:$base_port/hold" parent=$base_pid flag= ;;
            esac
            from=$(log_size "$work/faas.log")
            python3 "$here/warm.py" hold "$url?dir=$hold_dir" "$parent" "$n" "$hold_dir" $flag > "$work/held.json" \
                || log "holding $n requests ($side) went wrong: $(head -c 300 "$work/held.json")"
            peaks=$(reports "$work/faas.log" "$from" "$(log_size "$work/faas.log")" "$(fn_of hold "$side")" | awk '{ print $3 }' | paste -sd, -)
            zygote_json+="\"$side-$n\": $(cat "$work/held.json" || echo null), \"$side-$n-memory-peaks\": \"$peaks\","
            sleep 0.3
        done
    done
    zygote_json="${zygote_json%,}},"
fi
echo "${zygote_json%,}}" > "$raw/warm.json"

# With BENCH_BEFORE the sequential requests of faas and of the older faas are cut into
# BENCH_ROUNDS chunks that alternate, as the load runs do, and pooled afterwards.
sequential() { # HANDLER N
    local h=$1 n=$2 r side
    if [[ -z $before ]]; then
        python3 "$here/timing.py" 127.0.0.1 "$faas_port" "/$h" "$n" > "$raw/seq-$h.json"
    else
        for r in $(seq "$rounds"); do
            for side in faas before; do
                ((r % 2 == 0)) && side=$([[ $side == faas ]] && echo before || echo faas)
                python3 "$here/timing.py" 127.0.0.1 "$(port_of "$side")" "/$h" $(( (n + rounds - 1) / rounds )) --samples > "$work/seq-$h-$side-r$r.json"
            done
        done
        python3 "$here/timing.py" --merge "$work"/seq-"$h"-faas-r*.json > "$raw/seq-$h.json"
        python3 "$here/timing.py" --merge "$work"/seq-"$h"-before-r*.json > "$raw/seq-$h-before.json"
    fi
    if is_python "$h"; then
        python3 "$here/timing.py" 127.0.0.1 "$faas_port" "/$h-cold" "$n" > "$raw/seq-$h-cold.json"
    fi
    python3 "$here/timing.py" 127.0.0.1 "$base_port" "/$h" "$n" > "$raw/seq-$h-baseline.json"
}
log "sequential requests for Server-Timing: sh x$seq_n"
sequential sh "$seq_n"
for h in "${handlers[@]}"; do
    [[ $h == sh ]] && continue
    n=$(( seq_n / 5 ))
    # Cold numpy takes a quarter of a second a request.
    [[ $h == numpy ]] && n=$(( seq_n / 10 ))
    log "sequential requests: $h x$n"
    sequential "$h" "$n"
done

log "$conns keep-alive connections on /_/health (${seconds}s)"
sample_rss "$faas_pid" "$work/rss-conn-health" &
sampler=$!
oha_run "$raw/conn-health.json" "$conns" "http://127.0.0.1:$faas_port/_/health"
kill -TERM "$sampler"; wait "$sampler" 2>/dev/null || true
mem_json+=", \"conn_health\": {\"max_rss_kb\": $(cat "$work/rss-conn-health"), \"hwm_kb\": $(status_kb "$faas_pid" VmHWM)}"
sleep 1
log "$conns keep-alive connections on an sh function with concurrency = $wide_concurrency (${seconds}s)"
sample_rss "$faas_pid" "$work/rss-conn-sh" &
sampler=$!
oha_run "$raw/conn-sh.json" "$conns" "http://127.0.0.1:$faas_port/sh-wide"
kill -TERM "$sampler"; wait "$sampler" 2>/dev/null || true
mem_json+=", \"conn_sh\": {\"max_rss_kb\": $(cat "$work/rss-conn-sh"), \"hwm_kb\": $(status_kb "$faas_pid" VmHWM)}"
sleep 2
mem_json+=", \"end_rss_kb\": $(status_kb "$faas_pid" VmRSS), \"end_hwm_kb\": $(status_kb "$faas_pid" VmHWM)}"
echo "$mem_json" > "$raw/mem.json"

# The steps the sandbox child gained, timed one by one without tracing (bench/steps.c).
if [[ -n $before ]]; then
    if command -v cc >/dev/null && cc -O2 -o "$work/steps" "$here/steps.c" 2> "$work/steps-cc.err"; then
        log "set-up steps timed one by one (bench/steps.c, 300 sandbox-like children)"
        "$work/steps" 300 > "$raw/steps.json" 2> "$work/steps.err" || log "steps failed: $(head -c 300 "$work/steps.err")"
    else
        log "no C compiler (cc): skipping bench/steps.c"
    fi
fi

# Where a warm request's set-up goes: a second faas whose zygote runs as bench/zygote_timed.py
# (wrappers/zygote.py unchanged, loaded as a module, with timestamps and page-fault counts in
# the child; each child logs them as a ZT line). Sequential requests, then a short c=8 run: a
# request takes the spare (made ahead) when one waits and forks otherwise; warm.py steps tells
# them apart and splits the forked ones into phases. Plus the price of one copy-on-write fault.
if [[ $warm_profile == 1 && " ${handlers[*]} " == *" python "* ]]; then
    log "profile: a warm request's set-up, phase by phase (bench/zygote_timed.py), 300 sequential python requests and ${seconds}s at c=8"
    timed=$work/wrappers-timed
    mkdir -p "$timed" "$work/state-zt"
    cp -a "$repo/wrappers/." "$timed/"
    mv "$timed/zygote.py" "$timed/zygote_real.py"
    cp "$here/zygote_timed.py" "$timed/zygote.py"
    "$faas" --config "$work/faas.toml" --functions "$work/functions" --wrappers "$timed" --state-dir "$work/state-zt" serve --listen "127.0.0.1:$trace_port" 2> "$work/faas-zt.log" &
    zt_pid=$!
    pids+=("$zt_pid")
    wait_health "$trace_port"
    if python3 "$here/warm.py" ready "http://127.0.0.1:$trace_port" python /python 60 > /dev/null; then
        python3 "$here/timing.py" 127.0.0.1 "$trace_port" /python 300 > "$raw/zt-seq.json"
        python3 "$here/warm.py" steps "$work/faas-zt.log" python > "$raw/zt-seq-steps.json" || log "no forked request in the sequential profile"
        from=$(log_size "$work/faas-zt.log")
        oha_run "$raw/zt-c8.json" 8 "http://127.0.0.1:$trace_port/python"
        tail -c "+$((from + 1))" "$work/faas-zt.log" > "$work/faas-zt-c8.log"
        python3 "$here/warm.py" steps "$work/faas-zt-c8.log" python > "$raw/zt-c8-steps.json" || log "no forked request in the c=8 profile"
    else
        log "the timed zygote did not get ready: see $work/faas-zt.log"
    fi
    kill -TERM "$zt_pid" 2>/dev/null || true
    wait "$zt_pid" 2>/dev/null || true
    /usr/bin/python3 "$here/warm.py" cow > "$raw/cow.json" || true
fi

if [[ $profile == 1 ]]; then
    log "profile: perf record -a during faas sh c=8 (${seconds}s)"
    perf record -a -g -F 499 -o "$work/perf.data" -- sleep "$seconds" > /dev/null 2> "$work/perf-record.err" &
    perf_pid=$!
    oha_run "$work/profile-load.json" 8 "http://127.0.0.1:$faas_port/sh"
    wait "$perf_pid" || true
    {
        echo "# by process (comm), % of all samples"
        perf report -i "$work/perf.data" --no-children --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -8
        echo
        echo "# by process and symbol, % of all samples (top 30)"
        perf report -i "$work/perf.data" --no-children --sort comm,sym --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -30
    } > "$raw/profile-top.txt" || true

    cpu_n=1000
    for side in "${sides[@]}"; do
        log "profile: CPU per request, perf record -g on the $side server for $cpu_n sequential sh requests"
        pid=$faas_pid port=$(port_of "$side")
        [[ $side == baseline ]] && pid=$base_pid
        [[ $side == before ]] && pid=$before_pid
        python3 "$here/timing.py" 127.0.0.1 "$port" /sh 20 > /dev/null
        # The server's own threads, before and after (tokio starts blocking threads on demand):
        # any other thread is a child before its exec.
        ls "/proc/$pid/task" > "$work/cpu-$side-tids.txt"
        perf record -F 4999 -g -p "$pid" -o "$work/cpu-$side.data" > /dev/null 2> "$work/cpu-$side.err" &
        rec=$!
        sleep 0.5
        python3 "$here/timing.py" 127.0.0.1 "$port" /sh "$cpu_n" > "$work/cpu-$side-seq.json"
        ls "/proc/$pid/task" >> "$work/cpu-$side-tids.txt"
        kill -INT "$rec"
        wait "$rec" 2>/dev/null || true
        perf script -i "$work/cpu-$side.data" -F comm,tid,ip,sym 2>/dev/null > "$work/cpu-$side.txt"
        python3 "$here/cpu.py" "$work/cpu-$side.txt" 4999 "$cpu_n" "$raw/cpu-$side.json" "$work/cpu-$side-tids.txt" || log "cpu summary failed for $side"
    done

    # A faas started under `perf trace` (which, unlike -p, follows the sandbox children).
    traced_faas() { # EVENTS OUT STATE [before]: starts it; sets trace_pid and traced
        local events=() bin=$faas args=("${faas_args[@]}")
        [[ -n $1 ]] && events=(-e "$1")
        [[ ${4:-} == before ]] && bin=$before_faas args=("${before_args[@]}")
        mkdir -p "$3"
        perf trace "${events[@]}" -o "$2" -- "$bin" "${args[@]}" --state-dir "$3" serve --listen "127.0.0.1:$trace_port" 2> "$work/faas-trace.log" &
        trace_pid=$!
        pids+=("$trace_pid")
        wait_health "$trace_port"
        traced=$(pgrep -P "$trace_pid" -x faas | head -1 || true)
    }
    stop_traced() {
        kill -TERM "$traced" 2>/dev/null || true
        wait "$trace_pid" 2>/dev/null || true
    }

    if [[ -z $before ]]; then
        log "profile: perf trace -e clone3,execve (light) on a second faas for 300 sequential sh requests"
        traced_faas clone3,execve "$work/spans.txt" "$work/state-spans"
        python3 "$here/timing.py" 127.0.0.1 "$trace_port" /sh 300 > "$work/spans-seq.json"
        stop_traced
        python3 "$here/trace.py" --spans "$work/spans.txt" "$raw/spans.json" || log "span summary failed"
    else
        # setns traced too: a child that joins no network namespace got a fresh one from
        # clone3 (the pool was empty). Sequential requests always find one; a burst of 16 at
        # once on a fresh daemon makes ~15 misses, next to hits under the same load.
        for side in faas before; do
            sfx=; [[ $side == before ]] && sfx=-before
            log "profile: perf trace -e clone3,execve,setns (light) on a second faas ($side): 300 sequential sh requests, then a burst of 32 at c=16"
            traced_faas clone3,execve,setns "$work/spans$sfx.txt" "$work/state-spans$sfx" "$side"
            python3 "$here/timing.py" 127.0.0.1 "$trace_port" /sh 300 > "$work/spans$sfx-seq.json"
            oha --no-tui --output-format json -n 32 -c 16 "http://127.0.0.1:$trace_port/sh" > "$work/spans$sfx-burst.json" 2>&1 || log "burst failed on the traced $side faas"
            stop_traced
            python3 "$here/trace.py" --spans "$work/spans$sfx.txt" "$raw/spans$sfx.json" 300 || log "span summary failed for $side"
        done
    fi

    trace_sides=(faas)
    [[ -n $before ]] && trace_sides=(faas before)
    for side in "${trace_sides[@]}"; do
        sfx=; [[ $side == before ]] && sfx=-before
        log "profile: perf trace (every syscall) on a second faas ($side) for 100 sequential sh requests"
        n=100
        traced_faas "" "$work/trace$sfx.txt" "$work/state-trace$sfx" "$side"
        python3 "$here/timing.py" 127.0.0.1 "$trace_port" /sh 10 > /dev/null
        ls "/proc/$traced/task" > "$work/trace$sfx-tids.txt"
        python3 "$here/timing.py" 127.0.0.1 "$trace_port" /sh "$n" > "$work/trace$sfx-seq.json"
        ls "/proc/$traced/task" >> "$work/trace$sfx-tids.txt"
        stop_traced
        # Only the measured requests: drop start-up and the 10 warm-up requests (up to the 10th
        # handler's exit_group; the daemon itself never calls it while serving). trace.py drops
        # the shutdown.
        awk -v skip=10 'n >= skip { print } / exit_group\(/ { n++ }' "$work/trace$sfx.txt" > "$work/trace$sfx-window.txt"
        python3 "$here/trace.py" "$work/trace$sfx-window.txt" "$work/trace$sfx-tids.txt" "$n" "$work/trace$sfx-seq.json" "$raw/trace$sfx.json" || log "trace summary failed for $side"
    done
fi

# Warnings and errors the daemon logged during the run, counted (invocation ids blanked).
grep -E '^<[0-4]>' "$work/faas.log" | grep -Ev '^<[0-9]>REPORT ' | sed -E 's/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/ID/g' \
    | sort | uniq -c | sort -rn | head -20 > "$raw/faas-errors.txt" || true
if [[ -n $before ]]; then
    grep -E '^<[0-4]>' "$work/before.log" | grep -Ev '^<[0-9]>REPORT ' | sed -E 's/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/ID/g' \
        | sort | uniq -c | sort -rn | head -20 > "$raw/before-errors.txt" || true
fi

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem_total=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
concs_json=$(printf '%s,' "${concs[@]}"); concs_json="[${concs_json%,}]"
numpy_concs_json=$(printf '%s,' "${numpy_concs[@]}"); numpy_concs_json="[${numpy_concs_json%,}]"
handlers_json=$(printf '"%s",' "${handlers[@]}"); handlers_json="[${handlers_json%,}]"
cat > "$raw/meta.json" <<EOF
{"date": "$(date -u '+%Y-%m-%d %H:%M UTC')", "cpu": "$cpu", "nproc": $(nproc), "mem": "$mem_total",
 "kernel": "$(uname -sr)", "faas_rev": "$rev", "faas_build": "release ($target)",
 "loadgen": "$(oha --version | head -1)", "seconds": $seconds, "rounds": $rounds, "concurrency": $concs_json,
 "handlers": $handlers_json, "loadavg_start": "$load_start", "loadavg_end": "$(cut -d' ' -f1-3 /proc/loadavg)", "fn_concurrency": $fn_concurrency, "wide_concurrency": $wide_concurrency,
 "numpy_concurrency": $numpy_concs_json, "python": "$(/usr/bin/python3 -V 2>&1)", "numpy": "$(/usr/bin/python3 -c 'import numpy; print(numpy.__version__)' 2>/dev/null || echo absent)",
 "before_rev": "${before_rev:-}", "before_build": "${before:+release ($before_target)}", "autogroup": "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo absent)"}
EOF
[[ -f $here/results/NOTES.md ]] && cp "$here/results/NOTES.md" "$raw/notes.md"

mkdir -p "$here/results"
python3 "$here/report.py" "$raw" "$here/results/LATEST.md" "$here/results/LATEST.json"
log "wrote bench/results/LATEST.md"

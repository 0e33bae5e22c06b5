#!/usr/bin/env bash
# bench/run.sh - jobd's benchmark. `make bench` builds build/jobd, then runs this.
#
# Builds build/bench/loadgen, then measures, each BENCH_RUNS times (default 3)
# on a fresh server and database so earlier runs never weigh on later ones:
#   (a) GET /healthz req/s, 64 keep-alive connections: wrk (the limit) and loadgen
#   (b) durable single-job submits/s: POST /v1/jobs noop, 64 connections,
#       ~3 s or 100,000 requests; once more with --sync normal for comparison
#   (h) a batch of 1000 sleep 0.05 jobs and POST /v1/wait on all of them;
#   (i) 1000 open GET /v1/events streams: RSS, threads, fan-out time;
#   (c) end-to-end noop jobs/s: 50,000 submits on 64 connections, then
#       /v1/stats polled until every job is finished; first submit to last end
#   (d) submit-and-wait latency: 2,000 sequential POST /v1/jobs?wait=5
#   (j) the storage limit: build/bench/sqlite_limit (bench/sqlite_limit.c), raw
#       SQLite with jobd's schema and pragmas on the same disk: insert + 2
#       updates per job in transactions of 1000 jobs, without and with the
#       event row jobd writes per state change
#   (k) end-to-end noop through POST /v1/batches: 200,000 jobs as batches of
#       100 on 64 connections, until /v1/stats shows all finished
#   (l) RSS (VmRSS) of a freshly started server, default configuration
#   (m) RSS with 1,000,000 jobs pending: submitted as batches of 1000 with
#       delay 3600, so they stay `scheduled` and none runs; then (n) SIGTERM
#       and a restart on the same database, timed until /readyz answers 200.
#       Once more with the 1,000,000 jobs queued (no delay) behind a sleep
#       3600 on a one-thread executor, for RSS.
#       (m) and (n) run BENCH_BIG_RUNS times (default 1: ~1 min each).
# Prints a table (median, min-max, ratio) and writes every raw run to
# build/bench.json. Talks to 127.0.0.1 only. Exit status 1 when a figure could
# not be measured (the table still shows what was).
#
# Environment: JOBD (server binary, default build/jobd), BENCH_RUNS (3),
# BENCH_SECONDS (3), BENCH_E2E_JOBS (50000), BENCH_WAIT_REQUESTS (2000),
# BENCH_LOG_LEVEL (info), PYTHON (python3), BENCH_SQLITE_JOBS (200000),
# BENCH_BATCH_JOBS (200000), BENCH_BIG_JOBS (1000000), BENCH_BIG_RUNS (1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

JOBD=${JOBD:-build/jobd}
LOADGEN=build/bench/loadgen
OUT=build/bench.json
RUNS=${BENCH_RUNS:-3}
SECS=${BENCH_SECONDS:-3}
E2E_JOBS=${BENCH_E2E_JOBS:-50000}
WAIT_REQS=${BENCH_WAIT_REQUESTS:-2000}
ASYNC_JOBS=${BENCH_ASYNC_JOBS:-10000}
CRUNCH_ITER=${BENCH_CRUNCH_ITERATIONS:-300000000}
SQLITE_JOBS=${BENCH_SQLITE_JOBS:-200000}
BATCH_JOBS=${BENCH_BATCH_JOBS:-200000}
BIG_JOBS=${BENCH_BIG_JOBS:-1000000}
BIG_RUNS=${BENCH_BIG_RUNS:-1}
SQLITE_LIMIT=build/bench/sqlite_limit
PY=${PYTHON:-$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3 )}
# jobd prints its "listening on http://127.0.0.1:PORT" line at level info, so
# warn would hide the port. Info costs nothing per request (request lines are
# debug).
LOG_LEVEL=${BENCH_LOG_LEVEL:-warn}
CONNS=64
NOOP='{"task":"noop"}'
WARN=(-std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wformat=2 -Wshadow -Wmissing-prototypes
      -Wstrict-prototypes)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/jobd-bench.XXXXXX")
RAW=$TMP/raw.jsonl
SERVER_PID=
POLLER_PID=
PORT=
SERVER_LOG=
NSERVER=0
FAILED=0

log() { printf 'bench: %s\n' "$*" >&2; }

# cpu_busy_pct: how busy all cores are over one second, in percent (other
# work on the machine makes every figure noisy).
cpu_busy_pct() {
    local a b
    a=$(head -n 1 /proc/stat)
    sleep 1
    b=$(head -n 1 /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN {
        n = split(a, x); split(b, y); tot = 0
        for (i = 2; i <= n; i++) tot += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6])
        printf "%d", (tot > 0 ? 100 * (tot - idle) / tot : 0) }'
}

# Stops our server (SIGTERM, then SIGKILL after 10 s). Only ever our own pid.
stop_server() {
    local pid=$SERVER_PID i
    [ -n "$pid" ] || return 0
    SERVER_PID=
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "server $pid ignored SIGTERM for 10 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    else
        log "server $pid had already exited; its log ($SERVER_LOG):"
        tail -n 20 "$SERVER_LOG" >&2 || true
        FAILED=1
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    [ -z "$POLLER_PID" ] || kill "$POLLER_PID" 2>/dev/null || true
    stop_server
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server [jobd options...]: a fresh server on a fresh database; sets
# PORT, and SERVER_DIR (the database's directory). With REUSE_DIR set, the
# server opens the database in that directory instead.
start_server() {
    local dir i
    NSERVER=$((NSERVER + 1))
    dir=${REUSE_DIR:-$TMP/s$NSERVER}
    SERVER_DIR=$dir
    mkdir -p "$dir"
    SERVER_LOG=$dir/jobd$NSERVER.log
    "$JOBD" --listen 127.0.0.1:0 --db "$dir/jobd.db" --log-level "$LOG_LEVEL" "$@" 2>"$SERVER_LOG" &
    SERVER_PID=$!
    PORT=
    for ((i = 0; i < 1200; i++)); do # a restart on a big database takes seconds
        PORT=$(grep -o 'listening on http://127\.0\.0\.1:[0-9]*' "$SERVER_LOG" 2>/dev/null |
               head -n 1 | sed 's/.*://') || true
        [ -n "$PORT" ] && break
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            log "jobd exited at start ($JOBD $*); its log:"
            cat "$SERVER_LOG" >&2
            SERVER_PID=
            return 1
        fi
        sleep 0.05
    done
    if [ -z "$PORT" ]; then
        log "jobd printed no 'listening on http://127.0.0.1:PORT' within 60 s; its log:"
        cat "$SERVER_LOG" >&2
        stop_server
        return 1
    fi
}

# record FIGURE RUN JSON: appends one raw run.
record() {
    printf '{"figure": "%s", "run": %s, "data": %s}\n' "$1" "$2" "$3" >>"$RAW"
}

# lg ARGS...: runs loadgen against the current server, prints its JSON line.
lg() {
    "$LOADGEN" --host 127.0.0.1 --port "$PORT" "$@"
}

# probe: one submit-and-wait with curl, shown verbatim when something is wrong.
probe() {
    curl -sS --noproxy '*' -m 10 -i -X POST -H 'Content-Type: application/json' \
        --data "$NOOP" "http://127.0.0.1:$PORT/v1/jobs?wait=5" 2>&1 | tr -d '\r' || true
}

# wrk_json: GET /healthz with wrk, as a JSON object.
wrk_json() {
    local out
    out=$(wrk -t2 -c$CONNS -d"${SECS}s" --latency "http://127.0.0.1:$PORT/healthz" 2>&1) || true
    "$PY" - "$out" <<'PY'
import json, re, sys
t = sys.argv[1]
def num(pat, conv=float):
    m = re.search(pat, t)
    return conv(m.group(1)) if m else None
def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
lat = {p: ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", t, re.M)}
err = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
print(json.dumps({
    "rps": num(r"Requests/sec:\s+([\d.]+)"),
    "requests": num(r"(\d+) requests in", int),
    "p50_ms": lat.get("50"), "p99_ms": lat.get("99"),
    "non_2xx": num(r"Non-2xx or 3xx responses: (\d+)", int) or 0,
    "socket_errors": dict(zip(["connect", "read", "write", "timeout"],
                              map(int, err.groups()))) if err else {},
    "output": t}))
PY
}

# wait_all_done TOTAL T0_NS TOTAL_FILE: polls /v1/stats every 10 ms until TOTAL
# jobs are terminal and none is pending; prints {"seconds": since T0, ...}.
# Started alongside the submits, so its own start-up is not timed; once
# TOTAL_FILE appears it holds the number actually accepted, which replaces TOTAL.
wait_all_done() {
    "$PY" - "$PORT" "$1" "$2" "$3" <<'PY'
import json, os, sys, time, urllib.request
port, total, t0, total_file = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
url = "http://127.0.0.1:%d/v1/stats" % port
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
polls, counts, err = 0, {}, None
while True:
    try:
        with opener.open(url, timeout=5) as r:
            counts = json.load(r).get("counts", {})
        err = None
    except Exception as e:  # reported below if it lasts
        err = repr(e)
    polls += 1
    if os.path.exists(total_file):
        with open(total_file) as f:
            total = int(f.read())
    now = time.time_ns()
    done = sum(counts.get(k, 0) for k in ("succeeded", "failed", "cancelled"))
    pending = sum(counts.get(k, 0) for k in ("scheduled", "queued", "running"))
    if err is None and done >= total and pending == 0:
        print(json.dumps({"ok": True, "seconds": (now - t0) / 1e9, "counts": counts, "polls": polls}))
        break
    if now - t0 > 120e9:
        print(json.dumps({"ok": False, "seconds": (now - t0) / 1e9, "counts": counts,
                          "polls": polls, "error": err or "not all jobs finished within 120 s"}))
        break
    time.sleep(0.01)
PY
}

# --- setup -------------------------------------------------------------------
command -v "$PY" >/dev/null || { log "needs $PY (make deps-test)"; exit 1; }
command -v wrk >/dev/null || { log "needs wrk (make deps-test)"; exit 1; }
command -v curl >/dev/null || { log "needs curl (make deps-test)"; exit 1; }
[ -x "$JOBD" ] || { log "$JOBD is missing: run 'make bench' (it builds it first)"; exit 1; }
mkdir -p build/bench
cc "${WARN[@]}" -O2 -pthread -o "$LOADGEN" bench/loadgen.c
cc "${WARN[@]}" -O2 -o "$SQLITE_LIMIT" bench/sqlite_limit.c -lsqlite3
: >"$RAW"
BEGIN=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
BUSY_BEFORE=$(cpu_busy_pct)
log "jobd=$JOBD runs=$RUNS seconds=$SECS on $(nproc) cores; raw runs -> $OUT"

# --- (a) /healthz --------------------------------------------------------------
for ((r = 1; r <= RUNS; r++)); do
    log "(a) /healthz run $r/$RUNS"
    start_server
    record healthz_wrk "$r" "$(wrk_json)"
    # two threads, like wrk -t2; the submit figures use one (the client is far
    # from its limit there, and a second thread would take CPU from the server)
    record healthz_loadgen "$r" "$(lg --connections $CONNS --threads 2 --duration "$SECS" \
        --path /healthz || echo null)"
    stop_server
done

# --- (b) durable submits -------------------------------------------------------
submit_run() { # FIGURE RUN SYNC
    start_server --sync "$3"
    record "$1_probe" "$2" "$("$PY" -c 'import json,sys; print(json.dumps(sys.stdin.read()))' <<<"$(probe)")"
    record "$1" "$2" "$(lg --connections $CONNS --duration "$SECS" --requests 100000 \
        --method POST --path /v1/jobs --body "$NOOP" || echo null)"
    stop_server
}
for ((r = 1; r <= RUNS; r++)); do
    log "(b) durable submits, --sync full, run $r/$RUNS"
    submit_run submits_full "$r" full
done
log "(b) durable submits, --sync normal, once"
submit_run submits_normal 1 normal

# --- (c) end-to-end ------------------------------------------------------------
for ((r = 1; r <= RUNS; r++)); do
    log "(c) end-to-end, $E2E_JOBS noop jobs, run $r/$RUNS"
    start_server
    rm -f "$TMP/accepted" "$TMP/accepted.tmp"
    t0=$(date +%s%N)
    wait_all_done "$E2E_JOBS" "$t0" "$TMP/accepted" >"$TMP/done.json" &
    POLLER_PID=$!
    sub=$(lg --connections $CONNS --requests "$E2E_JOBS" --method POST --path /v1/jobs \
        --body "$NOOP" || echo null)
    accepted=$("$PY" -c 'import json,sys; d=json.loads(sys.argv[1]) or {}; print(d.get("status",{}).get("202",0))' "$sub")
    echo "$accepted" >"$TMP/accepted.tmp"
    mv "$TMP/accepted.tmp" "$TMP/accepted" # whole or absent for the poller
    wait "$POLLER_PID" || true
    POLLER_PID=
    done_json=$(cat "$TMP/done.json")
    [ -n "$done_json" ] || done_json='{"ok": false, "error": "the /v1/stats poller failed"}'
    if [ "$accepted" -eq 0 ]; then
        done_json='{"ok": false, "error": "no submit was accepted"}'
    fi
    record e2e "$r" "{\"jobs\": $E2E_JOBS, \"accepted\": $accepted, \"submit\": $sub, \"done\": $done_json}"
    stop_server
done

# --- (d) submit-and-wait ---------------------------------------------------------
for ((r = 1; r <= RUNS; r++)); do
    log "(d) submit-and-wait, $WAIT_REQS sequential requests, run $r/$RUNS"
    start_server
    record wait_probe "$r" "$("$PY" -c 'import json,sys; print(json.dumps(sys.stdin.read()))' <<<"$(probe)")"
    record wait "$r" "$(lg --sequential-wait --requests "$WAIT_REQS" --duration 30 || echo null)"
    stop_server
done

# --- (e) async makespan, (f) crunch on processes vs threads, (g) process noop ------
EXECS="thread=thread:2,process=process:2,async=async:$ASYNC_JOBS"
for ((r = 1; r <= RUNS; r++)); do
    log "(e) $ASYNC_JOBS concurrent sleep 1 on the async executor, run $r/$RUNS"
    start_server --executors "$EXECS" --max-queued $((ASYNC_JOBS * 2))
    record async_makespan "$r" "$("$PY" bench/executors.py makespan "$PORT" "$LOADGEN" "$ASYNC_JOBS" 1 async ||
        echo null)"
    stop_server
done
for ((r = 1; r <= RUNS; r++)); do
    log "(f) 8 crunch jobs on process:2 and on thread:2, run $r/$RUNS"
    start_server --executors "$EXECS"
    record crunch_process "$r" "$("$PY" bench/executors.py crunch "$PORT" 8 "$CRUNCH_ITER" process || echo null)"
    record crunch_thread "$r" "$("$PY" bench/executors.py crunch "$PORT" 8 "$CRUNCH_ITER" thread || echo null)"
    stop_server
done
for ((r = 1; r <= RUNS; r++)); do
    log "(h) POST /v1/wait over 1000 jobs, run $r/$RUNS"
    start_server --executors "$EXECS"
    record futures_wait "$r" "$("$PY" bench/futures.py "$PORT" 1000 || echo null)"
    stop_server
done
for ((r = 1; r <= RUNS; r++)); do
    log "(g) end-to-end, $E2E_JOBS noop jobs on the process executor, run $r/$RUNS"
    start_server --executors "process=process:2" --max-queued $((E2E_JOBS * 2))
    t0=$(date +%s%N)
    sub=$(lg --connections $CONNS --requests "$E2E_JOBS" --method POST --path /v1/jobs \
        --body '{"task":"noop","executor":"process"}' || echo null)
    accepted=$("$PY" -c 'import json,sys; d=json.loads(sys.argv[1]) or {}; print(d.get("status",{}).get("202",0))' "$sub")
    echo "$accepted" >"$TMP/accepted_g"
    done_json=$(wait_all_done "$E2E_JOBS" "$t0" "$TMP/accepted_g")
    record e2e_process "$r" "{\"jobs\": $E2E_JOBS, \"accepted\": $accepted, \"submit\": $sub, \"done\": $done_json}"
    stop_server
done

# --- (j) the storage limit -------------------------------------------------------
# The schema comes from a database this jobd made (started and stopped once),
# so the raw figure always uses jobd's current tables and indexes.
start_server
stop_server
SCHEMA_DB=$SERVER_DIR/jobd.db
for ((r = 1; r <= RUNS; r++)); do
    log "(j) storage limit: raw SQLite, $SQLITE_JOBS jobs, run $r/$RUNS"
    # in $TMP, where every server of this script keeps its database
    record sqlite_limit "$r" "$("$SQLITE_LIMIT" --dir "$TMP" --schema "$SCHEMA_DB" --jobs "$SQLITE_JOBS" || echo null)"
    record sqlite_limit_events "$r" \
        "$("$SQLITE_LIMIT" --dir "$TMP" --schema "$SCHEMA_DB" --jobs "$SQLITE_JOBS" --events || echo null)"
done

# --- (k) end-to-end through batches of 100 ------------------------------------------
BATCH100=$("$PY" -c 'import json; print(json.dumps({"jobs": [{"task": "noop"}] * 100}, separators=(",", ":")))')
for ((r = 1; r <= RUNS; r++)); do
    log "(k) end-to-end, $BATCH_JOBS noop jobs as POST /v1/batches of 100, run $r/$RUNS"
    # the default --max-queued (100000) would refuse part of them; the body
    # (~1.7 KB) is far below the default --max-body
    start_server --max-queued $((BATCH_JOBS * 2))
    rm -f "$TMP/accepted" "$TMP/accepted.tmp"
    t0=$(date +%s%N)
    wait_all_done "$BATCH_JOBS" "$t0" "$TMP/accepted" >"$TMP/done.json" &
    POLLER_PID=$!
    sub=$(lg --connections $CONNS --requests $((BATCH_JOBS / 100)) --method POST --path /v1/batches \
        --body "$BATCH100" --timeout 60 || echo null)
    accepted=$("$PY" -c 'import json,sys; d=json.loads(sys.argv[1]) or {}; print(100 * d.get("status",{}).get("202",0))' "$sub")
    echo "$accepted" >"$TMP/accepted.tmp"
    mv "$TMP/accepted.tmp" "$TMP/accepted"
    wait "$POLLER_PID" || true
    POLLER_PID=
    done_json=$(cat "$TMP/done.json")
    [ -n "$done_json" ] || done_json='{"ok": false, "error": "the /v1/stats poller failed"}'
    if [ "$accepted" -eq 0 ]; then
        done_json='{"ok": false, "error": "no batch was accepted"}'
    fi
    record e2e_batches "$r" "{\"jobs\": $BATCH_JOBS, \"accepted\": $accepted, \"submit\": $sub, \"done\": $done_json}"
    stop_server
done

# --- (l) RSS idle, (m) RSS with a million pending, (n) restart ------------------------
vmrss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status"; }
for ((r = 1; r <= RUNS; r++)); do
    log "(l) RSS of an idle server, default configuration, run $r/$RUNS"
    start_server
    sleep 1 # let every thread and worker process settle
    record rss_idle "$r" "{\"rss_kb\": $(vmrss_kb)}"
    stop_server
done
BIG1000=$("$PY" -c 'import json; print(json.dumps({"jobs": [{"task": "noop", "delay": 3600}] * 1000}, separators=(",", ":")))')
for ((r = 1; r <= BIG_RUNS; r++)); do
    log "(m) RSS with $BIG_JOBS jobs scheduled (delay 3600: none runs), run $r/$BIG_RUNS"
    start_server --executors one=thread:1 --max-queued $((BIG_JOBS * 2))
    sub=$(lg --connections 4 --requests $((BIG_JOBS / 1000)) --method POST --path /v1/batches \
        --body "$BIG1000" --timeout 60 || echo null)
    stats=$(curl -sS --noproxy '*' -m 10 "http://127.0.0.1:$PORT/v1/stats" || echo null)
    counts=$("$PY" -c 'import json,sys; print(json.dumps((json.loads(sys.argv[1]) or {}).get("counts")))' "$stats")
    big_rss=$(vmrss_kb)
    big_dir=$SERVER_DIR
    log "(n) restart on the same database until /readyz answers 200, run $r/$BIG_RUNS"
    stop_server
    t0=$(date +%s%N)
    REUSE_DIR=$big_dir start_server --executors one=thread:1 --max-queued $((BIG_JOBS * 2))
    t_listen=$(date +%s%N)
    ready=false
    for ((i = 0; i < 12000; i++)); do # 10 ms steps, 120 s at most
        code=$(curl -s --noproxy '*' -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/readyz" || true)
        if [ "$code" = 200 ]; then ready=true; break; fi
        sleep 0.01
    done
    t1=$(date +%s%N)
    restart="{\"ready\": $ready, \"seconds\": $(( (t1 - t0) / 1000000 ))e-3,"
    restart+=" \"listening_s\": $(( (t_listen - t0) / 1000000 ))e-3, \"rss_kb\": $(vmrss_kb)}"
    record big "$r" "{\"jobs\": $BIG_JOBS, \"submit\": $sub, \"counts\": $counts, \"rss_kb\": $big_rss, \"restart\": $restart}"
    stop_server
    rm -rf "$big_dir" # ~300 MB
done
BIGQ1000=$("$PY" -c 'import json; print(json.dumps({"jobs": [{"task": "noop"}] * 1000}, separators=(",", ":")))')
for ((r = 1; r <= BIG_RUNS; r++)); do
    log "(m) RSS with $BIG_JOBS jobs queued (behind a sleep 3600 on a 1-thread executor), run $r/$BIG_RUNS"
    # --grace 1: the stop need not wait the default 30 s for the sleep
    start_server --executors one=thread:1 --max-queued $((BIG_JOBS * 2)) --grace 1
    curl -sS --noproxy '*' -m 10 -o /dev/null -X POST -H 'Content-Type: application/json' \
        --data '{"task":"sleep","args":{"seconds":3600}}' "http://127.0.0.1:$PORT/v1/jobs" || true
    sub=$(lg --connections 4 --requests $((BIG_JOBS / 1000)) --method POST --path /v1/batches \
        --body "$BIGQ1000" --timeout 60 || echo null)
    stats=$(curl -sS --noproxy '*' -m 10 "http://127.0.0.1:$PORT/v1/stats" || echo null)
    counts=$("$PY" -c 'import json,sys; print(json.dumps((json.loads(sys.argv[1]) or {}).get("counts")))' "$stats")
    record big_queued "$r" "{\"jobs\": $BIG_JOBS, \"submit\": $sub, \"counts\": $counts, \"rss_kb\": $(vmrss_kb)}"
    big_dir=$SERVER_DIR
    stop_server
    rm -rf "$big_dir"
done

# --- report ----------------------------------------------------------------------
"$PY" - "$RAW" "$OUT" "$CONNS" "$(( $(date +%s) - BEGIN ))" "$JOBD" "$LOAD_BEFORE" "$BUSY_BEFORE" <<'PY' || FAILED=1
import json, os, platform, statistics, subprocess, sys, time
raw_path, out_path, conns, elapsed, jobd = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
load_before, busy_before = sys.argv[6], int(sys.argv[7])
runs = [json.loads(l) for l in open(raw_path) if l.strip()]
by = {}
for r in runs:
    by.setdefault(r["figure"], []).append(r["data"])

problems = []
def vals(fig, get):
    out = []
    for d in by.get(fig, []):
        try:
            v = get(d)
        except (KeyError, TypeError, IndexError):
            v = None
        if v is None:
            problems.append("%s: a run produced no figure" % fig)
        else:
            out.append(v)
    return out
def summ(v):
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)} if v else None
def fmt(x, dec):
    return ("{:,.%df}" % dec).format(x).replace(",", "") if x is not None else "-"

def e2e_rate(d):
    return d["done"]["counts"].get("succeeded", 0) / d["done"]["seconds"] if d["done"]["ok"] else None
fig = {
    "healthz_wrk_rps": summ(vals("healthz_wrk", lambda d: d["rps"])),
    "healthz_loadgen_rps": summ(vals("healthz_loadgen", lambda d: d["rps"])),
    "submits_full_rps": summ(vals("submits_full", lambda d: d["status"].get("202", 0) / d["seconds"])),
    "submits_full_p50_ms": summ(vals("submits_full", lambda d: d["p50_ms"])),
    "submits_full_p99_ms": summ(vals("submits_full", lambda d: d["p99_ms"])),
    "submits_normal_rps": summ(vals("submits_normal", lambda d: d["status"].get("202", 0) / d["seconds"])),
    "e2e_jobs_per_s": summ(vals("e2e", e2e_rate)),
    "e2e_submit_rps": summ(vals("e2e", lambda d: d["submit"]["status"].get("202", 0) / d["submit"]["seconds"])),
    "wait_p50_ms": summ(vals("wait", lambda d: d["p50_ms"] if d["status"].get("200") else None)),
    "async_makespan_s": summ(vals("async_makespan", lambda d: d["makespan_s"] if d["ok"] else None)),
    "crunch_process_s": summ(vals("crunch_process", lambda d: d["makespan_s"] if d["ok"] else None)),
    "crunch_thread_s": summ(vals("crunch_thread", lambda d: d["makespan_s"] if d["ok"] else None)),
    "e2e_process_jobs_per_s": summ(vals("e2e_process", e2e_rate)),
    "wait_p99_ms": summ(vals("wait", lambda d: d["p99_ms"] if d["status"].get("200") else None)),
    "sqlite_limit_jobs_per_s": summ(vals("sqlite_limit", lambda d: d["jobs_per_s"])),
    "sqlite_limit_events_jobs_per_s": summ(vals("sqlite_limit_events", lambda d: d["jobs_per_s"])),
    "e2e_batches_jobs_per_s": summ(vals("e2e_batches", e2e_rate)),
    "e2e_batches_submit_jobs_per_s": summ(vals("e2e_batches", lambda d: d["accepted"] / d["submit"]["seconds"])),
    "rss_idle_mb": summ(vals("rss_idle", lambda d: d["rss_kb"] / 1024)),
    "rss_big_mb": summ(vals("big", lambda d: d["rss_kb"] / 1024)),
    "rss_big_queued_mb": summ(vals("big_queued", lambda d: d["rss_kb"] / 1024)),
    "restart_big_s": summ(vals("big", lambda d: d["restart"]["seconds"] if d["restart"]["ready"] else None)),
    "restart_big_rss_mb": summ(vals("big", lambda d: d["restart"]["rss_kb"] / 1024)),
}

# Sanity: every status as expected, no transport errors, connections reused.
expect = {"healthz_loadgen": "200", "submits_full": "202", "submits_normal": "202", "wait": "200"}
ka = {}
for f, code in expect.items():
    for i, d in enumerate(by.get(f, []), 1):
        if not d:
            continue
        other = {k: v for k, v in d["status"].items() if k != code}
        if other:
            problems.append("%s run %d: statuses other than %s: %s" % (f, i, code, other))
        errs = {k: v for k, v in d["errors"].items() if v}
        if errs:
            problems.append("%s run %d: errors %s" % (f, i, errs))
        ka.setdefault(f, []).append((d["connections_opened"], d["connections"], d["server_closes"]))
for i, d in enumerate(by.get("e2e", []), 1):
    if d.get("submit") and (set(d["submit"]["status"]) - {"202"} or any(d["submit"]["errors"].values())):
        problems.append("e2e run %d: submit statuses %s errors %s" % (i, d["submit"]["status"], d["submit"]["errors"]))
    if not d["done"].get("ok"):
        problems.append("e2e run %d: %s (counts %s)" % (i, d["done"].get("error"), d["done"].get("counts")))
    elif d["done"]["counts"].get("succeeded", 0) != d["accepted"]:
        problems.append("e2e run %d: %d accepted but counts are %s" % (i, d["accepted"], d["done"]["counts"]))
for i, d in enumerate(by.get("healthz_wrk", []), 1):
    if d["non_2xx"] or any(d["socket_errors"].values()):
        problems.append("healthz wrk run %d: non-2xx %d, socket errors %s" % (i, d["non_2xx"], d["socket_errors"]))
for f in ("submits_full_probe", "submits_normal_probe", "wait_probe"):
    for i, t in enumerate(by.get(f, []), 1):
        if not t.startswith("HTTP/1.1 200") or '"succeeded"' not in t:
            problems.append("%s run %d: POST /v1/jobs?wait=5 %s answered:\n    %s" % (
                f, i, '{"task":"noop"}', t.strip().replace("\n", "\n    ")))

limit = fig["healthz_wrk_rps"]["median"] if fig["healthz_wrk_rps"] else None
def ratio(s, base, what):
    return "%.2f of %s" % (s["median"] / base, what) if s and base else ""
rows = []
def row(name, s, dec, r=""):
    if s is None:
        rows.append((name, "-", "-", r or "not measured"))
    else:
        rows.append((name, fmt(s["median"], dec), "%s–%s" % (fmt(s["min"], dec), fmt(s["max"], dec)), r))
row("/healthz req/s (%d conns, wrk)" % conns, fig["healthz_wrk_rps"], 0, "1.00" if limit else "")
row("/healthz req/s (%d conns, loadgen)" % conns, fig["healthz_loadgen_rps"], 0,
    ratio(fig["healthz_loadgen_rps"], limit, "wrk"))
row("durable submits/s (%d conns, sync full)" % conns, fig["submits_full_rps"], 0,
    ratio(fig["submits_full_rps"], limit, "healthz"))
row("  submit latency p50 ms", fig["submits_full_p50_ms"], 2)
row("  submit latency p99 ms", fig["submits_full_p99_ms"], 2)
row("durable submits/s (sync normal, 1 run)", fig["submits_normal_rps"], 0,
    ratio(fig["submits_normal_rps"], fig["submits_full_rps"]["median"] if fig["submits_full_rps"] else None,
          "sync full"))
row("end-to-end noop jobs/s (%s jobs)" % (by["e2e"][0]["jobs"] if by.get("e2e") else "?"),
    fig["e2e_jobs_per_s"], 0,
    ratio(fig["e2e_jobs_per_s"], fig["e2e_submit_rps"]["median"] if fig["e2e_submit_rps"] else None,
          "its submit phase"))
row("  its submit phase, submits/s", fig["e2e_submit_rps"], 0)
w50, w99 = fig["wait_p50_ms"], fig["wait_p99_ms"]
if w50 and w99:
    rows.append(("submit-and-wait p50 ms / p99 ms", "%.2f / %.2f" % (w50["median"], w99["median"]),
                 "%.2f–%.2f / %.2f–%.2f" % (w50["min"], w50["max"], w99["min"], w99["max"]), ""))
else:
    rows.append(("submit-and-wait p50 ms / p99 ms", "-", "-", "not measured"))
row("async: %s x sleep 1, makespan s" % (by["async_makespan"][0]["jobs"] if by.get("async_makespan") and by["async_makespan"][0] else "?"),
    fig["async_makespan_s"], 3, "ideal 1.000")
row("8 crunch on process:2, makespan s", fig["crunch_process_s"], 3)
row("8 crunch on thread:2, makespan s", fig["crunch_thread_s"], 3)
cp, ct = by.get("crunch_process", []), by.get("crunch_thread", [])
sp = [t["makespan_s"] / p["makespan_s"] for p, t in zip(cp, ct) if p and t and p.get("ok") and t.get("ok")]
fig["crunch_speedup_process_vs_thread"] = summ(sp)
row("  speed-up process/thread (same run)", summ(sp), 2)
row("end-to-end noop jobs/s, process:2 executor", fig["e2e_process_jobs_per_s"], 0)
sl, sle = fig["sqlite_limit_jobs_per_s"], fig["sqlite_limit_events_jobs_per_s"]
row("storage limit: insert+2 updates per job, batches of 1000 (jobs/s)", sl, 0, "raw SQLite, same disk")
row("  the same with an events row per change (jobs/s)", sle, 0,
    ratio(sle, sl["median"] if sl else None, "without events"))
eb = by.get("e2e_batches") or [None]
row("end-to-end noop jobs/s, POST /v1/batches of 100 (%s jobs)" % (eb[0]["jobs"] if eb[0] else "?"),
    fig["e2e_batches_jobs_per_s"], 0, ratio(fig["e2e_batches_jobs_per_s"], sle["median"] if sle else None,
                                            "storage limit with events"))
row("  its submit phase, jobs/s", fig["e2e_batches_submit_jobs_per_s"], 0)
row("RSS idle, MiB (fresh server, default config)", fig["rss_idle_mb"], 1, "target <= 15")
big = by.get("big") or [None]
nbig = big[0]["jobs"] if big[0] else "?"
row("RSS with %s jobs scheduled, MiB (%d run)" % (nbig, len(by.get("big", []))), fig["rss_big_mb"], 1,
    "target <= 300")
row("RSS with %s jobs queued, MiB (%d run)" % (nbig, len(by.get("big_queued", []))), fig["rss_big_queued_mb"], 1,
    "target <= 300")
row("restart with %s pending until /readyz 200, s (%d run)" % (nbig, len(by.get("big", []))),
    fig["restart_big_s"], 2, "target <= 3")
row("  RSS after that restart, MiB", fig["restart_big_rss_mb"], 1)
for i, d in enumerate(by.get("e2e_batches", []), 1):
    if d.get("submit") and (set(d["submit"]["status"]) - {"202"} or any(d["submit"]["errors"].values())):
        problems.append("e2e_batches run %d: submit statuses %s errors %s" % (i, d["submit"]["status"], d["submit"]["errors"]))
    if not d["done"].get("ok"):
        problems.append("e2e_batches run %d: %s (counts %s)" % (i, d["done"].get("error"), d["done"].get("counts")))
    elif d["done"]["counts"].get("succeeded", 0) != d["accepted"]:
        problems.append("e2e_batches run %d: %d accepted but counts are %s" % (i, d["accepted"], d["done"]["counts"]))
for i, d in enumerate(by.get("big", []), 1):
    if not d:
        continue
    sched = (d.get("counts") or {}).get("scheduled", 0)
    if sched != d["jobs"]:
        problems.append("big run %d: %d jobs submitted but %d scheduled (submit statuses %s)" % (
            i, d["jobs"], sched, (d.get("submit") or {}).get("status")))
    if not d["restart"]["ready"]:
        problems.append("big run %d: /readyz never answered 200 after the restart" % i)
for i, d in enumerate(by.get("big_queued", []), 1):
    if d and (d.get("counts") or {}).get("queued", 0) != d["jobs"]:
        problems.append("big_queued run %d: %d jobs submitted but counts are %s" % (i, d["jobs"], d.get("counts")))
fw = [d for d in by.get("futures_wait", []) if d and d.get("ok")]
row("batch of 1000 sleep 0.05 (async), accepted in ms", summ([d["batch_s"] * 1000 for d in fw]), 1)
row("POST /v1/wait ALL_COMPLETED on them, ms", summ([d["wait_running_s"] * 1000 for d in fw]), 1,
    "ideal ~50 (the sleep)")
row("  the same wait once all finished, ms", summ([d["wait_finished_s"] * 1000 for d in fw]), 1)
for i, d in enumerate(by.get("futures_wait", []), 1):
    if not d or not d.get("ok"):
        problems.append("futures_wait run %d: %s" % (i, json.dumps(d)[:300]))
for f in ("async_makespan", "crunch_process", "crunch_thread", "e2e_process"):
    for i, d in enumerate(by.get(f, []), 1):
        if not d or not (d.get("ok") if f != "e2e_process" else d["done"].get("ok")):
            problems.append("%s run %d: %s" % (f, i, json.dumps(d)[:300]))
for f, label in (("submits_full", "keep-alive: connections opened (submits)"),
                 ("healthz_loadgen", "keep-alive: connections opened (healthz)")):
    if ka.get(f):
        opened = max(o for o, _, _ in ka[f])
        want = ka[f][0][1]
        closes = max(c for _, _, c in ka[f])
        rows.append((label, "%d (of %d)" % (opened, want), "",
                     "ok" if opened == want else "NOT REUSED: server closed %d connections" % closes))
        if opened != want:
            problems.append("%s: %d connections opened for %d (the server closes keep-alive connections)"
                            % (f, opened, want))

print()
print("%-66s %12s  %-24s %s" % ("figure", "median", "min–max", "ratio"))
for name, med, rng, r in rows:
    print("%-66s %12s  %-24s %s" % (name, med, rng, r))
print()
load_after = open("/proc/loadavg").read().split()[:3]
print("(%d runs each on a fresh server and db; %s cores; %d s total; CPU %d%% busy just before)" % (
    max((len(v) for v in by.values()), default=0), os.cpu_count(), elapsed, busy_before))
if busy_before > 20:
    print("note: other work kept the CPUs %d%% busy before the run; expect noisy figures" % busy_before)
if problems:
    print("\nPROBLEMS:")
    for p in problems:
        print("  - " + p)

def cmd(*a):
    try:
        return subprocess.run(a, capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:
        return None
json.dump({
    "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "machine": {"cores": os.cpu_count(), "kernel": platform.release(), "cc": cmd("cc", "--version").split("\n")[0] if cmd("cc", "--version") else None,
                "wrk": (cmd("sh", "-c", "wrk --version 2>&1") or "").split("\n")[0] or None},
    "jobd": jobd, "connections": conns, "elapsed_s": elapsed,
    "cpu_busy_pct_before": busy_before, "loadavg_before": load_before, "loadavg_after": " ".join(load_after),
    "figures": fig, "problems": problems, "runs": runs,
}, open(out_path, "w"), indent=1)
print("raw runs: %s" % out_path)
sys.exit(1 if problems else 0)
PY
echo
log "(i) 1000 open GET /v1/events clients: memory, threads, fan-out of one event"
JOBD_BIN="$JOBD" "$PY" bench/sse_clients.py --clients 1000 --rounds 5 || FAILED=1
exit "$FAILED"

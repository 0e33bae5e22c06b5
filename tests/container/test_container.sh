#!/usr/bin/env bash
# Builds the jobd image with podman and checks it as a user would run it:
# non-root under tini, healthy, jobs run (process workers too), 401 without
# the token, data kept on a named volume across containers, SIGTERM -> drain
# and exit 0, and no start at all without a token unless JOBD_INSECURE_NO_AUTH=1.
# Ends with "N passed, N failed" (one count per check); exits non-zero on failure.
#
# Usage: tests/container/test_container.sh      (or: make test-container)
# Needs root (rootful podman), curl, and ../shared beside the repository
# (../shared/tools/podman-setup installs podman and builds the base image).
# Everything it creates (image, containers, volume) has a unique name and is
# removed on exit, even on failure. Ports are published on 127.0.0.1 only.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
setup=${PODMAN_SETUP:-$root/../shared/tools/podman-setup}
[ -x "$setup" ] || { echo "test_container: $setup not found (../shared must be beside the repository)" >&2; exit 2; }
command -v curl >/dev/null || { echo "test_container: curl is needed (make deps-test)" >&2; exit 2; }
eval "$("$setup")"

suffix="$$-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
image=localhost/jobd-test:t$suffix
vol=jobd-test-data-$suffix
c1=jobd-test-a-$suffix
c2=jobd-test-b-$suffix
c3=jobd-test-c-$suffix
c4=jobd-test-d-$suffix
token=tok-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
tmp=$(mktemp -d)

cleanup() {
  local rc=$?
  podman rm -f -v -t 0 "$c1" "$c2" "$c3" "$c4" >/dev/null 2>&1 || true
  podman volume rm -f "$vol" >/dev/null 2>&1 || true
  podman rmi -f "$image" >/dev/null 2>&1 || true
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0 failed=0
# check NAME COMMAND...: one count; the command's output is shown on failure.
check() {
  local name=$1; shift
  if "$@" >"$tmp/check.out" 2>&1; then
    passed=$((passed + 1)); echo "ok - $name"
  else
    failed=$((failed + 1)); echo "not ok - $name"
    grep -v 'unable to get systemd connection' "$tmp/check.out" | tail -20 | sed 's/^/    /'
  fi
}
summary() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

# A free port on 127.0.0.1: random, below the kernel's ephemeral range (a
# port there can be held by a client socket, or one in TIME_WAIT, which
# nothing answers on but podman still cannot bind: a CI run of the whole
# suite hit that), and one that binds without SO_REUSEADDR right now.
free_port() {
  local p i low
  low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  [ "$low" -gt 21000 ] || low=32768
  for i in $(seq 1 100); do
    p=$((20000 + RANDOM % (low - 20000)))
    if /usr/bin/python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' "$p" \
         2>/dev/null; then
      echo "$p"; return 0
    fi
  done
  return 1
}

# run_container NAME PORT [OPTION...]: starts the image on the volume with the
# options given (the token's).
run_container() {
  local name=$1 p=$2; shift 2
  podman run -d --name "$name" -p "127.0.0.1:$p:8080" -v "$vol:/data" "$@" "$image" \
    >"$tmp/run.out" 2>&1 || { cat "$tmp/run.out"; return 1; }
}

# wait_healthy PORT: /healthz answers 200 within 30 s.
wait_healthy() {
  local i
  for i in $(seq 1 150); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$1/healthz")" = 200 ] && return 0
    sleep 0.2
  done
  echo "no 200 from /healthz on port $1 after 30 s"; return 1
}

# api METHOD PATH [BODY]: curl with the token; writes the body to $tmp/body
# and prints the status code.
api() {
  local args=(-s -o "$tmp/body" -w '%{http_code}' --max-time 30 -X "$1" -H "Authorization: Bearer $token")
  [ $# -ge 3 ] && args+=(-H 'Content-Type: application/json' -d "$3")
  curl "${args[@]}" "http://127.0.0.1:$port$2" || true   # "000" when nothing answers
}

# expect_reply WANT GOT FIELD...: the last reply's code GOT is WANT and its body holds every FIELD.
expect_reply() {
  local want=$1 got=$2; shift 2
  [ "$got" = "$want" ] || { echo "HTTP $got, expected $want: $(cat "$tmp/body")"; return 1; }
  local f
  for f in "$@"; do grep -qF -- "$f" "$tmp/body" || { echo "no $f in: $(cat "$tmp/body")"; return 1; }; done
}

# The uids of every process in the container, "NAME UID" per line (no ps in a slim image).
proc_uids() {
  podman exec "$1" sh -c 'for s in /proc/[0-9]*/status; do awk "/^Name:/{n=\$2} /^Uid:/{print n, \$2}" "$s" 2>/dev/null; done'
}

# stop_clean NAME: SIGTERM through `podman stop -t 20`, which returns before
# the timeout (no SIGKILL), exit code 0, "stopped cleanly" in the logs.
stop_clean() {
  local t0 t1 code
  t0=$(date +%s)
  podman stop -t 20 "$1" >/dev/null || { echo "podman stop failed"; return 1; }
  t1=$(date +%s)
  code=$(podman inspect --format '{{.State.ExitCode}}' "$1")
  podman logs "$1" >"$tmp/logs" 2>&1 || true
  [ $((t1 - t0)) -lt 20 ] || { echo "stop took $((t1 - t0)) s: jobd was killed, not drained"; return 1; }
  [ "$code" = 0 ] || { echo "exit code $code"; tail -20 "$tmp/logs"; return 1; }
  grep -q 'stopped cleanly' "$tmp/logs" || { echo "no 'stopped cleanly' in the logs:"; tail -20 "$tmp/logs"; return 1; }
}

# ---- build ------------------------------------------------------------------
# --layers=false: no cached intermediate images are left behind (the build
# takes about 30 s once the base image exists).
echo "# building $image"
t0=$(date +%s)
if podman build --pull=never --format docker --network=host --layers=false -t "$image" . >"$tmp/build.log" 2>&1; then
  passed=$((passed + 1)); echo "ok - the image builds ($(($(date +%s) - t0)) s, $(podman image inspect --format '{{.Size}}' "$image") bytes)"
else
  failed=$((failed + 1)); echo "not ok - the image builds"; tail -30 "$tmp/build.log" | sed 's/^/    /'
  summary; exit 1
fi

# ---- first container ----------------------------------------------------------
port=$(free_port)
if ! run_container "$c1" "$port" -e "JOBD_TOKEN=$token" || ! wait_healthy "$port"; then
  failed=$((failed + 1)); echo "not ok - the container starts and /healthz answers 200"
  podman logs "$c1" 2>&1 | tail -30 | sed 's/^/    /'
  summary; exit 1
fi
passed=$((passed + 1)); echo "ok - the container starts and /healthz answers 200 (port $port)"

uid_not_root() { local u; u=$(podman exec "$c1" id -u); echo "id -u: $u"; [ -n "$u" ] && [ "$u" != 0 ]; }
check "podman exec runs as a non-root user" uid_not_root

jobd_not_root() {
  proc_uids "$c1" | tee "$tmp/uids"
  grep -q '^jobd 10001$' "$tmp/uids" || { echo "no jobd process with uid 10001"; return 1; }
  ! grep -qE ' 0$' "$tmp/uids" || { echo "a process runs as root"; return 1; }
}
check "jobd (and every process in the container) runs as uid 10001" jobd_not_root

check "tini is PID 1" sh -c "podman exec '$c1' cat /proc/1/comm | tee /dev/stderr | grep -qx tini"

check "podman healthcheck run: healthy" podman healthcheck run "$c1"

code=$(api POST '/v1/jobs?wait=10' '{"task": "square", "args": {"n": 7}}')
check "POST /v1/jobs?wait=10 square n=7 -> 200, result 49" expect_reply 200 "$code" '"status":"succeeded"' '"result":49'
job_id=$(grep -oE '"id":"[^"]+"' "$tmp/body" | head -1 | cut -d'"' -f4 || true)

code=$(api POST '/v1/jobs?wait=20' '{"task": "crunch", "args": {"iterations": 100000}, "executor": "process"}')
check "crunch on the process executor succeeds (workers run in the container)" \
  expect_reply 200 "$code" '"status":"succeeded"' '"executor":"process"'

workers_inside() {
  podman exec "$c1" sh -c 'grep -l -- --internal-worker /proc/[0-9]*/cmdline 2>/dev/null | wc -l' | tee "$tmp/n"
  [ "$(cat "$tmp/n")" -ge 1 ]
}
check "process-executor workers are processes of the container" workers_inside

code=$(curl -s -o "$tmp/body" -w '%{http_code}' --max-time 10 "http://127.0.0.1:$port/v1/jobs" || true)
check "GET /v1/jobs without the token -> 401" expect_reply 401 "$code" '"unauthorized"'
code=$(curl -s -o "$tmp/body" -w '%{http_code}' --max-time 10 -H 'Authorization: Bearer wrong' \
  "http://127.0.0.1:$port/v1/jobs" || true)
check "GET /v1/jobs with a wrong token -> 401" expect_reply 401 "$code" '"unauthorized"'

# A job still running at SIGTERM: the drain lets it finish within the grace period.
code=$(api POST /v1/jobs '{"task": "sleep", "args": {"seconds": 2}}')
sleep_id=$(grep -oE '"id":"[^"]+"' "$tmp/body" | head -1 | cut -d'"' -f4 || true)
sleep_running() {
  local i
  for i in $(seq 1 50); do
    [ "$(api GET "/v1/jobs/$sleep_id")" = 200 ] && grep -qF '"status":"running"' "$tmp/body" && return 0
    sleep 0.1
  done
  echo "job $sleep_id not running: $(cat "$tmp/body")"; return 1
}
check "a 2 s sleep job is submitted (202)" sh -c "[ '$code' = 202 ] && [ -n '$sleep_id' ]"
check "... and is running when SIGTERM comes" sleep_running

check "SIGTERM (podman stop -t 20): drains, exit code 0, 'stopped cleanly'" stop_clean "$c1"
check "podman rm" podman rm "$c1"

# ---- a second container on the same volume, the token from a file ----------------------
port=$(free_port)
printf '%s\n' "$token" >"$tmp/token" && chmod 0644 "$tmp/token"
if run_container "$c2" "$port" -v "$tmp/token:/run/secrets/jobd_token:ro" \
     -e JOBD_TOKEN_FILE=/run/secrets/jobd_token && wait_healthy "$port"; then
  passed=$((passed + 1)); echo "ok - a new container starts on the same volume (token from JOBD_TOKEN_FILE)"
  code=$(api GET "/v1/jobs/${job_id:-missing-id}")
  check "the earlier job ($job_id) is still there, succeeded, result 49" \
    expect_reply 200 "$code" "\"id\":\"$job_id\"" '"status":"succeeded"' '"result":49'
  code=$(api GET "/v1/jobs/${sleep_id:-missing-id}")
  check "the job running at SIGTERM finished during the drain (succeeded)" \
    expect_reply 200 "$code" "\"id\":\"$sleep_id\"" '"status":"succeeded"'
  check "the database on the volume belongs to uid 10001" \
    sh -c "podman exec '$c2' stat -c '%n %u' /data /data/jobd.db | tee /dev/stderr | awk '\$2 != 10001 {exit 1}'"
  check "SIGTERM stops the second container cleanly too" stop_clean "$c2"
else
  failed=$((failed + 1)); echo "not ok - a new container starts on the same volume"
  podman logs "$c2" 2>&1 | tail -30 | sed 's/^/    /'
fi

# ---- no token: refused, unless JOBD_INSECURE_NO_AUTH=1 ----------------------------------
no_token_refused() {
  local rc=0
  timeout 60 podman run --rm --name "$c3" "$image" >"$tmp/c3.out" 2>&1 || rc=$?
  grep -v 'unable to get systemd connection' "$tmp/c3.out"
  [ "$rc" = 2 ] || { echo "exit status $rc, expected 2"; return 1; }
  grep -q 'JOBD_TOKEN' "$tmp/c3.out" && grep -q 'JOBD_INSECURE_NO_AUTH' "$tmp/c3.out" ||
    { echo "the message does not say how to proceed"; return 1; }
}
check "without a token the container refuses to start (exit 2, names JOBD_TOKEN and JOBD_INSECURE_NO_AUTH)" \
  no_token_refused

insecure_starts() {
  port=$(free_port)
  podman run -d --rm --name "$c4" -p "127.0.0.1:$port:8080" -e JOBD_INSECURE_NO_AUTH=1 "$image" >/dev/null
  wait_healthy "$port" || { podman logs "$c4" 2>&1 | tail -20; return 1; }
  local code
  code=$(curl -s -o "$tmp/body" -w '%{http_code}' --max-time 10 "http://127.0.0.1:$port/v1/tasks" || true)
  expect_reply 200 "$code" '"square"'
  podman stop -t 20 "$c4" >/dev/null
}
check "with JOBD_INSECURE_NO_AUTH=1 it starts and serves /v1 without a token" insecure_starts

summary

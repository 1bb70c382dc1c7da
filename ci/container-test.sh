#!/usr/bin/env bash
# The container test: builds the image from the Dockerfile with podman, runs it behind
# nginx (TLS, a throwaway CA) on SQLite and on PostgreSQL, and checks what a deployment
# relies on. Also checks the deployment files: the Prometheus alert rules (promtool) and
# the structure of compose.yaml, and then starts compose.yaml for real with that image
# (ci/compose-test.sh). Run by .ci/run; needs root (apt-get, podman, runuser).
#
# No registry can be reached here, so the base images are made from Debian's packages
# (mmdebstrap) and passed to the Dockerfile as build arguments; its defaults stay the
# official images. Those base images and the last built image are kept as a cache for the
# next run (CALLHOOK_CI_FRESH_BASE=1 rebuilds the base images); everything else this
# script creates (containers, volumes, nginx, PostgreSQL, cgroup folders, temporary
# files) is removed when it exits, on failure too (CALLHOOK_CI_KEEP_WORK=1 keeps the
# temporary files, for a post-mortem).
#
# Everything listens on loopback only: the containers share the host's network
# namespace (podman's networking needs more than these machines allow) and get their
# ports from the environment.
#
#   ci/container-test.sh           everything
#   ci/container-test.sh prepare   only install the packages and make the base images
#                                  and compose's stand-in images (network-bound: .ci/run
#                                  runs it while cargo compiles)
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-all}
[[ $MODE == all || $MODE == prepare ]] || { echo "usage: $0 [prepare]" >&2; exit 2; }

APP=1400000001
EXAMPLE_CALL_ID=aheahfo-eqwnknoihfsd-qweqf
# Tencent's documented example request, as in the book's getting started page.
EXAMPLE_QUERY="sdkappid=$APP&command=call_end&contenttype=json&clientip=127.0.0.1&optplatform=iOS"
EXAMPLE_BODY='{"UserId":"Alice","RoomId":"Alice'"'"'s Room","TotalNum":2,"MediaType":"audio","CallType":"single","CallId":"aheahfo-eqwnknoihfsd-qweqf","Role":"caller","CallResult":"normal_end","EventTime":170485688,"StartCallTs":1704856873,"AcceptTs":1704856876,"EndTs":1704856885}'
# The client's address, as nginx sees it (any 127/8 address is loopback on Linux).
CLIENT_ADDR=127.0.0.7
SHUTDOWN_MS=5000

IMAGE=localhost/callhook:ci
BASE_DEBIAN=localhost/callhook-ci/debian:bookworm
NAME=callhook-ci-$$

started=$(date +%s)
passed=0
step() { echo "== container: $*"; }
ok() {
  passed=$((passed + 1))
  echo "   ok: $*"
}
fail() {
  echo "   FAILED: $*" >&2
  exit 1
}
elapsed() { echo $(($(date +%s) - started)); }

# --- what this script needs from Debian ------------------------------------------------
step "packages"
# iptables: netavark writes the test network's NAT rules with it (Debian's podman only
# suggests it, and a machine without it fails here).
need=()
for pkg in podman runc mmdebstrap nginx openssl prometheus python3-yaml curl shellcheck \
  podman-compose netavark aardvark-dns iptables; do
  dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=300 "${need[@]}" >/dev/null
fi
PG_BIN=${CALLHOOK_PG_BIN:-$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}
[[ -x $PG_BIN/initdb ]] || fail "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin or CALLHOOK_PG_BIN)"
PY=/usr/bin/python3

# --- cleanup, on success and on failure ------------------------------------------------
WORK=$(mktemp -d /tmp/callhook-ci.XXXXXX)
chmod 0755 "$WORK"
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)
containers=()
volumes=()
load_pids=()
nginx_started=
pg_started=
pg_user=
cgroup_before=$WORK/cgroups-before
# Where the containers' cgroups go: under this process's memory cgroup (hybrid cgroup v1
# layout), else podman's default parent.
cgroup_parent=$(awk -F: '$2 == "memory" { print $3 }' /proc/self/cgroup)
[[ -n $cgroup_parent && $cgroup_parent != / ]] || cgroup_parent=/libpod_parent

cgroup_dirs() { find /sys/fs/cgroup -mindepth 2 -type d 2>/dev/null | sort; }

cleanup() {
  local rc=$?
  set +e
  for pid in "${load_pids[@]}"; do kill "$pid" 2>/dev/null; done
  if ((rc != 0)); then
    echo "== container: failed after $(elapsed) s; logs follow" >&2
    for c in "${containers[@]}"; do
      echo "--- podman logs $c (last 40 lines)" >&2
      "${PODMAN[@]}" logs --tail 40 "$c" >&2 2>&1
    done
    [[ -f $WORK/nginx/error.log ]] && { echo "--- nginx error log" >&2; tail -n 20 "$WORK/nginx/error.log" >&2; }
    [[ -f $WORK/pg/server.log ]] && { echo "--- PostgreSQL log" >&2; tail -n 20 "$WORK/pg/server.log" >&2; }
  fi
  [[ -n $nginx_started && -f $WORK/nginx/nginx.pid ]] && kill -QUIT "$(cat "$WORK/nginx/nginx.pid")" 2>/dev/null
  [[ -n $pg_started ]] && runuser -u "$pg_user" -- "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m immediate -w stop >/dev/null 2>&1
  for c in "${containers[@]}"; do "${PODMAN[@]}" rm -f -v -t 0 "$c" >/dev/null 2>&1; done
  for v in "${volumes[@]}"; do "${PODMAN[@]}" volume rm -f "$v" >/dev/null 2>&1; done
  # The cgroupfs manager leaves empty folders under each controller: one per container,
  # conmon's, and the parent path it had to create. Remove those that appeared during
  # this run on that path, deepest first (rmdir refuses a cgroup that still has
  # processes or children).
  if [[ -f $cgroup_before ]]; then
    local ours=${cgroup_parent#/} rel
    comm -13 "$cgroup_before" <(cgroup_dirs) | sort -r | while read -r dir; do
      rel=${dir#/sys/fs/cgroup/*/}
      if [[ $ours == "$rel" || $ours == "$rel"/* || $rel == "$ours"/* ]]; then
        rmdir "$dir" 2>/dev/null
      fi
    done
  fi
  if [[ ${CALLHOOK_CI_KEEP_WORK:-} == 1 ]]; then
    echo "kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- deployment files ------------------------------------------------------------------
check_deploy_files() {
  step "alert rules, compose.yaml, CI scripts"
  shellcheck .ci/run ci/container-test.sh ci/compose-test.sh ci/report-browser-test.sh \
    ci/stand-ins/postgres/docker-entrypoint.sh ci/stand-ins/prometheus/entrypoint.sh || fail "shellcheck"
  ok "shellcheck .ci/run ci/container-test.sh ci/compose-test.sh ci/report-browser-test.sh ci/stand-ins/*/*.sh"
  promtool check rules deploy/prometheus/alerts.yml >"$WORK/promtool.log" 2>&1 ||
    { cat "$WORK/promtool.log" >&2; fail "promtool check rules"; }
  ok "promtool check rules deploy/prometheus/alerts.yml"
  promtool test rules deploy/prometheus/alerts.test.yml >"$WORK/promtool.log" 2>&1 ||
    { cat "$WORK/promtool.log" >&2; fail "promtool test rules"; }
  ok "promtool test rules deploy/prometheus/alerts.test.yml (unit tests of every alert)"
  # Every metric an alert uses is one callhook exports (catches a rename on either side);
  # a histogram's series are its name with _bucket, _sum or _count.
  grep -o 'callhook_[a-z_]*' deploy/prometheus/alerts.yml | sort -u >"$WORK/alert-metrics"
  while read -r metric; do
    base=${metric%_bucket}
    base=${base%_sum}
    base=${base%_count}
    grep -q "\"$base\"" src/metrics.rs || fail "alerts.yml uses $metric, which src/metrics.rs does not define"
  done <"$WORK/alert-metrics"
  ok "every metric in alerts.yml is defined in src/metrics.rs"
  "$PY" ci/check-compose.py compose.yaml || fail "compose.yaml structure"
  ok "compose.yaml structure (ci/check-compose.py)"
}
[[ $MODE == prepare ]] || check_deploy_files

# --- base images -----------------------------------------------------------------------
# The Rust image copies in this machine's toolchain (the one `cargo` here runs), the
# machine's CA bundle (the crate registry is reached through its TLS setup), gcc and libc6-dev.
SYSROOT=$(rustc --print sysroot)
RUST_VERSION=$(rustc --version | awk '{print $2}')
BASE_RUST=localhost/callhook-ci/rust:$RUST_VERSION-bookworm
step "base images ($BASE_RUST, $BASE_DEBIAN)"
make_debian() {
  mmdebstrap --quiet --variant=minbase bookworm - |
    "${PODMAN[@]}" import --quiet --change 'CMD ["/bin/bash"]' - "$BASE_DEBIAN" >/dev/null
}
make_rust() {
  # shellcheck disable=SC2016 # $1 is the hook's argument (the chroot), expanded by mmdebstrap's sh
  mmdebstrap --quiet --variant=minbase --include=gcc,libc6-dev,ca-certificates \
    --customize-hook='mkdir -p "$1/usr/local/rust" "$1/usr/local/cargo"' \
    --customize-hook="copy-in $SYSROOT/bin $SYSROOT/lib $SYSROOT/libexec $SYSROOT/etc /usr/local/rust" \
    --customize-hook='upload /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt' \
    bookworm - |
    "${PODMAN[@]}" import --quiet \
      --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV CARGO_HOME=/usr/local/cargo' \
      - "$BASE_RUST" >/dev/null
}
t0=$(date +%s)
base_jobs=()
replaced=()
for pair in "debian:$BASE_DEBIAN" "rust:$BASE_RUST"; do
  kind=${pair%%:*} tag=${pair#*:}
  if [[ ${CALLHOOK_CI_FRESH_BASE:-} != 1 ]] && "${PODMAN[@]}" image exists "$tag"; then
    echo "reusing $tag"
  else
    echo "making $tag"
    replaced+=("$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)")
    "make_$kind" >"$WORK/base-$kind.log" 2>&1 &
    base_jobs+=("$!:$kind")
  fi
done
for job in "${base_jobs[@]}"; do
  wait "${job%%:*}" || { cat "$WORK/base-${job#*:}.log" >&2; fail "making the ${job#*:} base image"; }
done
# A remade base image leaves its predecessor untagged: remove those (unless in use).
for id in "${replaced[@]}"; do
  [[ -n $id ]] || continue
  if [[ -z $("${PODMAN[@]}" image inspect --format '{{.RepoTags}}' "$id" 2>/dev/null | tr -d '[]') ]]; then
    "${PODMAN[@]}" rmi "$id" >/dev/null 2>&1 || true
  fi
done
echo "base images ready in $(($(date +%s) - t0)) s"
if [[ $MODE == prepare ]]; then
  ci/compose-test.sh prepare || fail "compose's stand-in images (ci/compose-test.sh prepare)"
  exit 0
fi

# --- build -----------------------------------------------------------------------------
# --isolation chroot: RUN steps without an OCI runtime or cgroups; --format docker keeps
# the HEALTHCHECK (the OCI format drops it); --network host: cargo and apt-get reach the
# package registries. --layers=false: no intermediate images pile up from run to run; the
# Dockerfile's cache mounts (crate registry, target directory) are what make a rebuild
# fast.
step "podman build"
t0=$(date +%s)
old_image=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
build_image() {
  "${PODMAN[@]}" build --isolation chroot --format docker --pull=never --network host --layers=false \
    --build-arg "RUST_IMAGE=$BASE_RUST" --build-arg "RUNTIME_IMAGE=$BASE_DEBIAN" \
    --tag "$IMAGE" . >"$WORK/build.log" 2>&1
}
# A RUN step once failed here with "Close_Fd sealing memfd copy: Device or resource busy"
# (buildah, not the Dockerfile; the same build passed at once when run again): that error,
# and only that one, gets one more try.
if ! build_image; then
  if grep -q "sealing memfd copy: Device or resource busy" "$WORK/build.log"; then
    echo "   podman build: buildah's transient memfd error; building once more"
    build_image || { tail -n 60 "$WORK/build.log" >&2; fail "podman build"; }
  else
    tail -n 60 "$WORK/build.log" >&2
    fail "podman build"
  fi
fi
build_s=$(($(date +%s) - t0))
new_image=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE")
# The image this build replaced, if nothing else uses it.
if [[ -n $old_image && $old_image != "$new_image" ]]; then
  "${PODMAN[@]}" rmi "$old_image" >/dev/null 2>&1 || true
fi
size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")
ok "image built in $build_s s: $IMAGE, $((size / 1000000)) MB ($size bytes)"
[[ $("${PODMAN[@]}" image inspect --format '{{.Config.Healthcheck.Test}}' "$IMAGE") == *healthcheck* ]] ||
  fail "the image has no HEALTHCHECK"

# --- helpers ---------------------------------------------------------------------------
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)     # callhook (one container at a time)
TLS_PORT=$(free_port) # nginx
HTTP_PORT=$(free_port) # nginx's port 80 (a redirect)
PG_PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"
HTTPS="https://localhost:$TLS_PORT"

# Podman's default nofile and nproc limits exceed these machines' hard limits.
RUN_FLAGS=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096 --network host --read-only
  --cgroup-parent "$cgroup_parent")
[[ -f $cgroup_before ]] || cgroup_dirs >"$cgroup_before"

# start_callhook NAME VOLUME [ENV=VALUE…]: runs the image detached, waits for /healthz.
start_callhook() {
  local name=$1 volume=$2
  shift 2
  local envs=(-e "CALLHOOK_SDKAPPIDS=$APP" -e "CALLHOOK_LISTEN=127.0.0.1:$PORT"
    -e "CALLHOOK_TRUSTED_PROXIES=127.0.0.1" -e "CALLHOOK_SHUTDOWN_TIMEOUT_MS=$SHUTDOWN_MS")
  for kv in "$@"; do envs+=(-e "$kv"); done
  containers+=("$name")
  # Without systemd, podman cannot schedule the health check itself and says so on
  # stderr; `podman healthcheck run` still runs it (checked below).
  "${PODMAN[@]}" run -d --name "$name" "${RUN_FLAGS[@]}" -v "$volume:/var/lib/callhook" \
    "${envs[@]}" "$IMAGE" >/dev/null 2>"$WORK/run-$name.err" || { cat "$WORK/run-$name.err" >&2; fail "podman run $name"; }
  for _ in $(seq 1 150); do
    curl -fsS -o /dev/null "$BASE/healthz" 2>/dev/null && return 0
    [[ $("${PODMAN[@]}" inspect --format '{{.State.Running}}' "$name") == true ]] || fail "$name exited at start"
    sleep 0.2
  done
  fail "$name did not answer /healthz within 30 s"
}

# stop_callhook NAME: podman stop (SIGTERM); exit code 0 within the shutdown bound.
stop_callhook() {
  local name=$1 t0 t1 code
  t0=$(date +%s%N)
  "${PODMAN[@]}" stop -t 30 "$name" >/dev/null 2>>"$WORK/run-$name.err"
  t1=$(date +%s%N)
  code=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$name")
  local ms=$(((t1 - t0) / 1000000))
  [[ $code == 0 ]] || fail "$name exited with $code after podman stop"
  ((ms <= SHUTDOWN_MS + 2000)) || fail "$name took $ms ms to stop (bound: $SHUTDOWN_MS ms)"
  "${PODMAN[@]}" logs "$name" 2>&1 | grep -q '"callhook stopped"' || fail "$name did not log its clean stop"
  echo "$ms"
}

# post URL QUERY BODY [curl args…]: prints "HTTP_STATUS BODY".
post() {
  local url=$1 query=$2 body=$3
  shift 3
  curl -sS --max-time 10 -o "$WORK/answer" -w '%{http_code}' "$@" "$url/?$query" -d "$body" >"$WORK/status"
  echo "$(cat "$WORK/status") $(cat "$WORK/answer")"
}

# events NAME [args…]: `callhook events --format json` in the running container.
events() {
  local name=$1
  shift
  "${PODMAN[@]}" exec "$name" callhook events --format json "$@"
}

# json_get EXPR: prints a Python expression over the JSON on stdin (as `d`).
json_get() { "$PY" -c "import json, sys; d = json.load(sys.stdin); print($1)"; }

# json_check FILE EXPR: whether a Python expression over the JSON in FILE (as `d`) holds;
# `ev(call_id)` is the list of events with that call id.
json_check() {
  "$PY" - "$1" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
ev = lambda call_id: [e for e in d if e.get("call_id") == call_id]
sys.exit(0 if eval("(" + sys.argv[2] + ")") else 1)
PY
}

status_body() { # CALL_ID USER
  printf '{"UserId":"%s","RoomId":"r","TotalNum":2,"MediaType":"video","CallType":"single","CallId":"%s","Role":"caller","CallResult":"normal_end","EventTime":1704856890,"StartCallTs":1704856873,"AcceptTs":1704856876,"EndTs":1704856885}' "$2" "$1"
}

# --- TLS and nginx ---------------------------------------------------------------------
step "throwaway CA and nginx ($HTTPS)"
mkdir -p "$WORK/tls" "$WORK/nginx/tmp"
chmod 1777 "$WORK/nginx/tmp"
(
  cd "$WORK/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=callhook CI test CA" -keyout ca.key -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=localhost" -keyout privkey.pem -out server.csr 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile server.ext -out fullchain.pem 2>/dev/null
) || fail "making the test CA and certificate"

# The site file of docs/src/deploy.md and compose.yaml, with only the upstream address, the
# listen port and the certificate paths replaced. Each must occur exactly once.
site=deploy/nginx/callhook.conf
for pattern in 'server callhook:8080;' 'listen 443 ssl;' 'listen 80;' '/etc/nginx/tls/fullchain.pem;' '/etc/nginx/tls/privkey.pem;'; do
  [[ $(grep -cF -- "$pattern" "$site") == 1 ]] || fail "$site: expected exactly one '$pattern'"
done
sed -e "s|server callhook:8080;|server 127.0.0.1:$PORT;|" \
  -e "s|listen 443 ssl;|listen 127.0.0.1:$TLS_PORT ssl;|" \
  -e "s|listen 80;|listen 127.0.0.1:$HTTP_PORT;|" \
  -e "s|/etc/nginx/tls/|$WORK/tls/|" "$site" >"$WORK/nginx/site.conf"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log notice;
events { worker_connections 512; }
http {
    access_log $WORK/nginx/access.log;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    include $WORK/nginx/site.conf;
}
EOF
nginx -t -q -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" || fail "nginx -t on $site"
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"
nginx_started=1
ok "nginx runs $site (TLS with a certificate from the test CA)"
redirect=$(curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' "http://localhost:$HTTP_PORT/?sdkappid=$APP")
[[ $redirect == "301 https://localhost/?sdkappid=$APP" ]] || fail "port 80 (here $HTTP_PORT) answered [$redirect], expected a 301 to https"
ok "its port 80 server (here $HTTP_PORT) redirects to https"

# --- SQLite: user, read-only root, proxy, health check, metrics ------------------------
step "SQLite on a volume, behind nginx"
volumes+=("$NAME-data")
"${PODMAN[@]}" volume create "$NAME-data" >/dev/null
start_callhook "$NAME-sqlite" "$NAME-data"

pid=$("${PODMAN[@]}" inspect --format '{{.State.Pid}}' "$NAME-sqlite")
uids=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "/proc/$pid/status")
gids=$(awk '/^Gid:/ { print $2, $3, $4, $5 }' "/proc/$pid/status")
[[ $uids == "10001 10001 10001 10001" && $gids == "10001 10001 10001 10001" ]] ||
  fail "callhook runs as uid [$uids] gid [$gids], expected 10001"
who=$("${PODMAN[@]}" exec "$NAME-sqlite" id)
[[ $who == "uid=10001(callhook) gid=10001(callhook) groups=10001(callhook)" ]] || fail "id in the container: $who"
ok "callhook runs as uid 10001, gid 10001 (user and group callhook)"

[[ $("${PODMAN[@]}" inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$NAME-sqlite") == true ]] || fail "root fs not read-only"
if "${PODMAN[@]}" exec "$NAME-sqlite" sh -c ': > /usr/local/bin/probe' 2>/dev/null; then
  fail "the root filesystem is writable"
fi
listing=$("${PODMAN[@]}" exec "$NAME-sqlite" find /var/lib/callhook -mindepth 1 -maxdepth 1 -printf '%U:%G %f\n' | sort)
while read -r line; do echo "   volume: $line"; done <<<"$listing"
echo "$listing" | grep -q '^10001:10001 callhook.db$' || fail "callhook.db is not on the volume, owned by 10001:10001"
echo "$listing" | grep -v '^10001:10001 ' && fail "a file on the volume is not owned by 10001:10001"
echo "$listing" | grep -q ' \.' && fail "dotfiles on the data volume"
ok "read-only root filesystem; the volume is writable and holds only callhook.db* (10001:10001)"

answer=$(post "$HTTPS" "$EXAMPLE_QUERY" "$EXAMPLE_BODY" --cacert "$WORK/tls/ca.pem" --interface "$CLIENT_ADDR" -D "$WORK/headers")
[[ $answer == '200 {"ErrorCode":0,"ErrorMessage":"Success"}' ]] || fail "the documented example through nginx: $answer"
grep -qiE '^x-request-id: [0-9a-f]{32}' "$WORK/headers" || fail "no X-Request-Id from nginx echoed back"
events "$NAME-sqlite" --last 10 >"$WORK/events.json"
json_check "$WORK/events.json" "len(ev('$EXAMPLE_CALL_ID')) == 1 and ev('$EXAMPLE_CALL_ID')[0]['remote_addr'] == '$CLIENT_ADDR'
  and ev('$EXAMPLE_CALL_ID')[0]['user_id'] == 'Alice' and ev('$EXAMPLE_CALL_ID')[0]['client_ip'] == '127.0.0.1'
  and ev('$EXAMPLE_CALL_ID')[0]['deliveries'] == 1" ||
  fail "the example is not stored once with remote_addr $CLIENT_ADDR: $(cat "$WORK/events.json")"
ok "the documented example, over HTTPS through nginx, stored with remote_addr $CLIENT_ADDR (the client nginx saw)"

answer=$(post "$HTTPS" "$EXAMPLE_QUERY" "$(status_body ci-forged Mallory)" --cacert "$WORK/tls/ca.pem" \
  --interface 127.0.0.8 -H 'X-Forwarded-For: 203.0.113.9')
[[ $answer == "200 "*'"ErrorCode":0'* ]] || fail "forged X-Forwarded-For delivery: $answer"
events "$NAME-sqlite" --last 10 >"$WORK/events.json"
json_check "$WORK/events.json" "[e['remote_addr'] for e in ev('ci-forged')] == ['127.0.0.8']" ||
  fail "a client's forged X-Forwarded-For was believed: $(cat "$WORK/events.json")"
ok "a forged X-Forwarded-For from the client does not change remote_addr"

big=$(head -c 100000 /dev/zero | tr '\0' 'x')
answer=$(post "$HTTPS" "$EXAMPLE_QUERY" "{\"pad\":\"$big\"}" --cacert "$WORK/tls/ca.pem")
[[ $answer == "413 "*'"ErrorCode":71203'* ]] || fail "a 100 kB body through nginx: ${answer:0:200}"
ok "a body over callhook's 64 KiB limit passes nginx and gets callhook's 413 envelope (71203)"

# The image's own `callhook send --example`, trusting the test CA: a duplicate now.
containers+=("$NAME-send")
"${PODMAN[@]}" run --rm --name "$NAME-send" "${RUN_FLAGS[@]}" -v "$WORK/tls/ca.pem:/ca.pem:ro" -e SSL_CERT_FILE=/ca.pem \
  "$IMAGE" send --url "$HTTPS/" --sdkappid "$APP" --example --quiet 2>"$WORK/send.err" ||
  { cat "$WORK/send.err" >&2; fail "callhook send --example through nginx"; }
events "$NAME-sqlite" --last 10 >"$WORK/events.json"
json_check "$WORK/events.json" "[e['deliveries'] for e in ev('$EXAMPLE_CALL_ID')] == [2]" ||
  fail "the repeated example is not stored once with deliveries 2: $(cat "$WORK/events.json")"
ok "callhook send --example (the image's own sender) through nginx: acknowledged, stored once, deliveries 2"

health=$("${PODMAN[@]}" healthcheck run "$NAME-sqlite" 2>&1) || fail "podman healthcheck run: $health"
ok "the image's HEALTHCHECK (callhook healthcheck, CALLHOOK_LISTEN on port $PORT) reports healthy"

curl -fsS "$BASE/metrics" >"$WORK/metrics-sqlite.txt"
promtool check metrics <"$WORK/metrics-sqlite.txt" || fail "promtool check metrics (SQLite)"
ok "live /metrics passes promtool check metrics"
python3 ci/check-dashboard.py deploy/grafana/dashboards/callhook.json "$WORK/metrics-sqlite.txt" ||
  fail "the Grafana dashboard (ci/check-dashboard.py)"
ok "the Grafana dashboard's queries parse and name only callhook's metrics"

# --- podman stop under load ------------------------------------------------------------
step "podman stop under load"
# Four senders post unique callbacks as fast as they can and note the acknowledged ones.
sender() {
  local w=$1 n=0 failures=0 out=$WORK/acked-$1
  : >"$out"
  while [[ ! -f $WORK/stop-load ]] && ((failures < 20)); do
    n=$((n + 1))
    if curl -s --max-time 10 "$BASE/?$EXAMPLE_QUERY" -d "$(status_body "load-$w-$n" u)" 2>/dev/null |
      grep -q '"ErrorCode":0,'; then
      echo "load-$w-$n" >>"$out"
    else
      failures=$((failures + 1))
      sleep 0.05
    fi
  done
}
for w in 1 2 3 4; do
  sender "$w" &
  load_pids+=("$!")
done
sleep 2
stop_ms=$(stop_callhook "$NAME-sqlite")
touch "$WORK/stop-load"
for pid in "${load_pids[@]}"; do wait "$pid" || true; done
load_pids=()
cat "$WORK"/acked-* | sort >"$WORK/acked"
acked=$(wc -l <"$WORK/acked")
((acked > 20)) || fail "the load did not run ($acked acknowledged)"
ok "podman stop under load: exit code 0 after $stop_ms ms (bound $SHUTDOWN_MS ms)"

# --- restart with the same volume ------------------------------------------------------
step "a new container on the same volume"
start_callhook "$NAME-sqlite2" "$NAME-data"
events "$NAME-sqlite2" --last 100000 >"$WORK/events.json"
json_get "'\n'.join(e['call_id'] for e in d if (e['call_id'] or '').startswith('load-'))" <"$WORK/events.json" | sort >"$WORK/stored"
lost=$(comm -23 "$WORK/acked" "$WORK/stored" | wc -l)
((lost == 0)) || fail "$lost acknowledged deliveries are not stored: $(comm -23 "$WORK/acked" "$WORK/stored" | head -5)"
[[ $(uniq -d "$WORK/stored" | wc -l) == 0 ]] || fail "a delivery is stored twice"
stored=$(wc -l <"$WORK/stored")
json_check "$WORK/events.json" "[e['deliveries'] for e in ev('$EXAMPLE_CALL_ID')] == [2]" ||
  fail "the example is gone after the restart"
ok "all $acked acknowledged deliveries stored ($stored stored in all), and the example, after a restart on the same volume"
"${PODMAN[@]}" healthcheck run "$NAME-sqlite2" >/dev/null || fail "healthcheck after the restart"
stop_callhook "$NAME-sqlite2" >/dev/null

# --- PostgreSQL, its outage and the replay ---------------------------------------------
step "PostgreSQL (the host's $PG_BIN, port $PG_PORT)"
# initdb refuses to run as root: the cluster runs as postgres (or nobody).
pg_user=postgres
id -u postgres >/dev/null 2>&1 || pg_user=nobody
mkdir -p "$WORK/pg"
chown "$pg_user" "$WORK/pg"
runuser -u "$pg_user" -- "$PG_BIN/initdb" -D "$WORK/pg/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >/dev/null
pg_start() {
  runuser -u "$pg_user" -- "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$WORK/pg" start >/dev/null
}
pg_start
pg_started=1
psql_() { "$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }
psql_ -d postgres -c 'CREATE DATABASE callhook'
volumes+=("$NAME-pgdata")
"${PODMAN[@]}" volume create "$NAME-pgdata" >/dev/null
start_callhook "$NAME-pg" "$NAME-pgdata" "CALLHOOK_DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/callhook"

answer=$(post "$HTTPS" "$EXAMPLE_QUERY" "$EXAMPLE_BODY" --cacert "$WORK/tls/ca.pem" --interface "$CLIENT_ADDR")
[[ $answer == '200 {"ErrorCode":0,"ErrorMessage":"Success"}' ]] || fail "the example on PostgreSQL: $answer"
row=$(psql_ -d callhook -c "SELECT user_id, remote_addr, deliveries FROM call_events WHERE call_id = '$EXAMPLE_CALL_ID'")
[[ $row == "Alice|$CLIENT_ADDR|1" ]] || fail "the example in PostgreSQL: [$row]"
events "$NAME-pg" --last 5 >"$WORK/events.json"
json_check "$WORK/events.json" "[e['remote_addr'] for e in ev('$EXAMPLE_CALL_ID')] == ['$CLIENT_ADDR']" ||
  fail "callhook events on PostgreSQL does not show the example: $(cat "$WORK/events.json")"
ok "the example through nginx is in PostgreSQL (remote_addr $CLIENT_ADDR); callhook events reads it"

runuser -u "$pg_user" -- "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m immediate -w stop >/dev/null
pg_started=
t0=$(date +%s%N)
answer=$(post "$HTTPS" "$EXAMPLE_QUERY" "$(status_body ci-outage Bob)" --cacert "$WORK/tls/ca.pem" --interface "$CLIENT_ADDR")
ms=$((($(date +%s%N) - t0) / 1000000))
[[ $answer == "200 "*'"ErrorCode":0,'* ]] || fail "a delivery while PostgreSQL is down: $answer"
ready=$(curl -sS "$BASE/readyz")
[[ $(echo "$ready" | json_get "d['database']") == down ]] || fail "/readyz while PostgreSQL is down: $ready"
curl -fsS "$BASE/metrics" >"$WORK/metrics-pg.txt"
promtool check metrics <"$WORK/metrics-pg.txt" || fail "promtool check metrics (PostgreSQL down)"
ok "PostgreSQL down: a delivery is acknowledged in $ms ms (ErrorCode 0, kept in the outage journal); /readyz says database down; /metrics passes promtool"

pg_start
pg_started=1
replayed=
for _ in $(seq 1 60); do
  row=$(psql_ -d callhook -c "SELECT user_id, remote_addr, deliveries FROM call_events WHERE call_id = 'ci-outage'" 2>/dev/null || true)
  [[ -n $row ]] && { replayed=1; break; }
  sleep 0.5
done
[[ -n $replayed ]] || fail "the delivery acknowledged during the outage is not in PostgreSQL 30 s after it came back"
[[ $row == "Bob|$CLIENT_ADDR|1" ]] || fail "the replayed delivery: [$row]"
for _ in $(seq 1 20); do
  ready=$(curl -sS "$BASE/readyz")
  [[ $(echo "$ready" | json_get "d['database']") == up ]] && break
  sleep 0.5
done
[[ $(echo "$ready" | json_get "d['database']") == up ]] || fail "/readyz after PostgreSQL came back: $ready"
[[ $(psql_ -d callhook -c 'SELECT count(*) FROM call_events') == 2 ]] || fail "PostgreSQL holds more or fewer than the 2 events"
ok "PostgreSQL back: the delivery is replayed into it (once), /readyz says database up"
stop_callhook "$NAME-pg" >/dev/null
ok "podman stop on PostgreSQL: exit code 0"

# --- compose.yaml started for real -----------------------------------------------------
step "compose.yaml with podman-compose (ci/compose-test.sh)"
t0=$(date +%s)
ci/compose-test.sh "$IMAGE" || fail "compose.yaml with podman-compose (ci/compose-test.sh)"
ok "compose.yaml up, healthy, a callback through nginx over TLS stored in PostgreSQL, down ($(($(date +%s) - t0)) s)"

echo "== container: image $IMAGE is $((size / 1000000)) MB; test took $(elapsed) s (build $build_s s)"
echo "container: $passed passed, 0 failed"

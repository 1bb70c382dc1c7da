#!/usr/bin/env bash
# The compose test: starts compose.yaml for real with Debian's podman-compose (1.0.3):
# PostgreSQL, callhook and nginx come up and become healthy; a callback sent to nginx over
# TLS (checked against a throwaway CA) is acknowledged and stored in PostgreSQL; port 80
# redirects to https; a renewed certificate is served after `nginx -s reload`; the
# monitoring profile's Prometheus scrapes callhook; then `podman-compose down -v`. Run by
# ci/container-test.sh after it built the image (and by hand, against an image built
# before); needs root.
#
# No registry can be reached here, so compose's images are local: callhook's is the image
# the container test built, and postgres, nginx and Prometheus are stand-ins made from
# Debian's packages (ci/stand-ins/), tagged with the names compose.yaml uses (Grafana is
# not packaged by Debian, so it is not started). podman-compose 1.0.3
# cannot run compose.yaml exactly as written, so the test runs a copy with only these
# differences (and the same meaning):
# - nginx's `networks: {callhook: {ipv4_address: …}}` is a list (1.0.3 cannot read that
#   form); the network is created beforehand with compose.yaml's subnet (1.0.3 ignores
#   `ipam`), and nginx is given its address with --ip;
# - the services are started one at a time, each after the ones it depends on are healthy
#   (1.0.3 neither waits for `condition: service_healthy` nor knows profiles, and no
#   health check is scheduled here: `podman healthcheck run` runs them);
# - relative paths are absolute (the copy is not beside the repository's files), and
#   callhook's `build:` is dropped (the image is there; nothing is built);
# - docs/src/deploy.md's compose.override.yaml (the app's token) is merged into it;
# - Prometheus publishes no port (its loopback port may be taken on a shared machine; the
#   test asks it from inside its container).
# Containers talk through podman's netavark backend with aardvark-dns (service names),
# chosen for this test only with its own containers.conf (the machine's default stays).
#
#   ci/compose-test.sh prepare   only install the packages and make the stand-in images
#   ci/compose-test.sh [IMAGE]   the test; IMAGE is callhook's image (localhost/callhook:ci)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=run
IMAGE=localhost/callhook:ci
case ${1:-} in
  prepare) MODE=prepare ;;
  -* | help) echo "usage: $0 [prepare | IMAGE]" >&2 && exit 2 ;;
  ?*) IMAGE=$1 ;;
esac

APP=1400000001
CALL_ID=compose-ci-$$-$(date +%s)
BASE_DEBIAN=localhost/callhook-ci/debian:bookworm
PROJECT=callhook-ci-$$
PY=/usr/bin/python3

started=$(date +%s)
passed=0
step() { echo "== compose: $*"; }
ok() {
  passed=$((passed + 1))
  echo "   ok: $*"
}
fail() {
  echo "   FAILED: $*" >&2
  exit 1
}

step "packages"
# iptables: netavark writes the test network's NAT rules with it (Debian's podman only
# suggests it, and a machine without it fails here).
need=()
for pkg in podman runc podman-compose netavark aardvark-dns iptables openssl curl python3-yaml; do
  dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=300 "${need[@]}" >/dev/null
fi

WORK=$(mktemp -d /tmp/callhook-compose.XXXXXX)
chmod 0755 "$WORK"
# runc (crun refuses this machine's hybrid cgroup layout), the cgroupfs manager (no
# systemd), limits within the machine's hard limits, and netavark for this test's network
# (aardvark-dns resolves the service names; the CNI backend has no DNS here).
cat >"$WORK/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
[network]
network_backend = "netavark"
EOF
export CONTAINERS_CONF=$WORK/containers.conf
cgroup_parent=$(awk -F: '$2 == "memory" { print $3 }' /proc/self/cgroup)
[[ -n $cgroup_parent && $cgroup_parent != / ]] || cgroup_parent=/libpod_parent
cgroup_dirs() { find /sys/fs/cgroup -mindepth 2 -type d 2>/dev/null | sort; }
cgroup_dirs >"$WORK/cgroups-before"
# netavark leaves a network's (empty) port-forwarding chain behind: removed if new.
nat_chains() { iptables -t nat -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^NETAVARK-DN-/ { print $2 }' | sort; }
nat_chains >"$WORK/nat-before"
network=
compose_up=

compose() { podman-compose -p "$PROJECT" -f "$WORK/compose.yaml" "$@"; }

cleanup() {
  local rc=$?
  set +e
  if ((rc != 0)) && [[ -n $compose_up ]]; then
    echo "== compose: failed after $(($(date +%s) - started)) s; logs follow" >&2
    for c in $(podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}'); do
      echo "--- podman logs $c (last 30 lines)" >&2
      podman logs --tail 30 "$c" >&2 2>&1
    done
  fi
  if [[ -n $compose_up ]]; then
    compose down -v -t 5 >"$WORK/down.log" 2>&1 || cat "$WORK/down.log" >&2
    # Whatever down left (a container it did not know of), and the project's volumes.
    podman ps -aq --filter "label=io.podman.compose.project=$PROJECT" | xargs -r podman rm -f -v -t 0 >/dev/null 2>&1
    podman volume ls -q --filter "label=io.podman.compose.project=$PROJECT" | xargs -r podman volume rm -f >/dev/null 2>&1
  fi
  [[ -n $network ]] && podman network rm -f "$network" >/dev/null 2>&1
  comm -13 "$WORK/nat-before" <(nat_chains) | while read -r chain; do
    [[ $(iptables -t nat -S "$chain" | wc -l) == 1 ]] && iptables -t nat -X "$chain"
  done
  # The empty folders the cgroupfs manager made for the containers (and conmon's) under
  # this process's cgroup, under each controller: only those that appeared during this
  # run, deepest first (rmdir refuses a cgroup with processes or children).
  local ours=${cgroup_parent#/} rel
  comm -13 "$WORK/cgroups-before" <(cgroup_dirs) | sort -r | while read -r dir; do
    rel=${dir#/sys/fs/cgroup/*/}
    if [[ $ours == "$rel" || $ours == "$rel"/* || $rel == "$ours"/* ]]; then
      rmdir "$dir" 2>/dev/null
    fi
  done
  if [[ ${CALLHOOK_CI_KEEP_WORK:-} == 1 ]]; then
    echo "kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the copy of compose.yaml that podman-compose 1.0.3 can run ------------------------
# The app's token, as docs/src/deploy.md has the operator require one: compose.override.yaml
# beside compose.yaml, the token itself in .env. Merged into the copy as Docker Compose
# merges maps.
cat >"$WORK/compose.override.yaml" <<EOF
services:
  callhook:
    environment:
      CALLHOOK_TOKEN_$APP: \${CALLHOOK_TOKEN:?set CALLHOOK_TOKEN in .env}
EOF
# Prints shell assignments: the images and the facts the test needs.
"$PY" - "$ROOT" "$WORK/compose.yaml" "$WORK/compose.override.yaml" >"$WORK/facts" <<'PY'
import re, shlex, sys
import yaml

root, out, override = sys.argv[1], sys.argv[2], sys.argv[3]
doc = yaml.safe_load(open(f"{root}/compose.yaml", encoding="utf-8"))

def merge(into, extra):
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value

merge(doc, yaml.safe_load(open(override, encoding="utf-8")))
services = doc["services"]
nginx = services["nginx"]
net, cfg = next(iter(nginx["networks"].items()))
nginx["networks"] = [net]
subnet = doc["networks"][net]["ipam"]["config"][0]["subnet"]

def absolute(value):
    if isinstance(value, str):
        return re.sub(r"(^|:-)\./", lambda m: m.group(1) + root + "/", value)
    if isinstance(value, list):
        return [absolute(v) for v in value]
    return value

for svc in services.values():
    svc["volumes"] = absolute(svc.get("volumes") or [])
    svc.pop("build", None)  # the image is there; nothing is built
services["prometheus"].pop("ports", None)
yaml.safe_dump(doc, open(out, "w", encoding="utf-8"), sort_keys=False)

facts = {
    "NETWORK_KEY": net,
    "SUBNET": subnet,
    "NGINX_IP": cfg["ipv4_address"],
    "PG_IMAGE": services["postgres"]["image"],
    "NGINX_IMAGE": services["nginx"]["image"],
    "CALLHOOK_IMAGE": services["callhook"]["image"],
    "PROM_IMAGE": services["prometheus"]["image"],
    "PG_USER": services["postgres"]["environment"]["POSTGRES_USER"],
    "PG_DB": services["postgres"]["environment"]["POSTGRES_DB"],
}
for k, v in facts.items():
    print(f"{k}={shlex.quote(str(v))}")
PY
# shellcheck source=/dev/null
. "$WORK/facts"

# --- stand-in images -------------------------------------------------------------------
# Made from the container test's Debian base image and ci/stand-ins/NAME, under a tag that
# names both (a change to either makes a new one); kept as a cache for the next run.
step "stand-in images for $PG_IMAGE, $NGINX_IMAGE and $PROM_IMAGE"
podman image exists "$BASE_DEBIAN" || fail "no $BASE_DEBIAN: run ci/container-test.sh prepare first"
base_id=$(podman image inspect --format '{{.Id}}' "$BASE_DEBIAN")
stand_in() { # NAME: prints the stand-in's tag, made if missing
  local name=$1 sum tag
  sum=$( (echo "$base_id" && cd "ci/stand-ins/$name" && find . -type f -print0 | sort -z | xargs -0 sha256sum) |
    sha256sum | cut -c1-12)
  tag=localhost/callhook-ci/$name:$sum
  if ! podman image exists "$tag"; then
    echo "making $tag" >&2
    podman build --isolation chroot --format docker --pull=never --network host --layers=false \
      --build-arg "BASE_IMAGE=$BASE_DEBIAN" --tag "$tag" "ci/stand-ins/$name" >"$WORK/build-$name.log" 2>&1 ||
      { tail -n 30 "$WORK/build-$name.log" >&2; fail "building the $name stand-in"; }
    # Its predecessors (made from other files or another base image), unless in use.
    podman images --format '{{.Repository}}:{{.Tag}}' "localhost/callhook-ci/$name" | grep -vxF "$tag" |
      xargs -r podman rmi >/dev/null 2>&1 || true
  fi
  echo "$tag"
}
t0=$(date +%s)
pg_stand_in=$(stand_in postgres)
nginx_stand_in=$(stand_in nginx)
prom_stand_in=$(stand_in prometheus)
echo "stand-in images ready in $(($(date +%s) - t0)) s"
[[ $MODE == prepare ]] && exit 0

podman image exists "$IMAGE" || fail "no image $IMAGE (ci/container-test.sh builds it)"
podman tag "$pg_stand_in" "$PG_IMAGE"
podman tag "$nginx_stand_in" "$NGINX_IMAGE"
podman tag "$prom_stand_in" "$PROM_IMAGE"
podman tag "$IMAGE" "$CALLHOOK_IMAGE"
ok "tagged $PG_IMAGE ($pg_stand_in), $NGINX_IMAGE ($nginx_stand_in), $PROM_IMAGE ($prom_stand_in), $CALLHOOK_IMAGE ($IMAGE)"

# --- the operator's part: .env and the certificate -------------------------------------
step "throwaway CA, certificate and .env"
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
HTTP_PORT=$(free_port)
HTTPS_PORT=$(free_port)
TOKEN=$(openssl rand -hex 16)
mkdir -p "$WORK/tls"
make_cert() { # FILE_PREFIX: a server certificate for localhost from the test CA
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=localhost" -keyout "$1.key" -out "$1.csr" 2>/dev/null &&
    openssl x509 -req -in "$1.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial -days 2 \
      -extfile "$WORK/server.ext" -out "$1.pem" 2>/dev/null
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=callhook compose CI test CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null ||
  fail "making the test CA"
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >"$WORK/server.ext"
make_cert "$WORK/cert1" || fail "making the certificate"
cp "$WORK/cert1.pem" "$WORK/tls/fullchain.pem"
cp "$WORK/cert1.key" "$WORK/tls/privkey.pem"
chmod 0644 "$WORK/tls/"*.pem
# As docs/src/deploy.md has the operator write it (podman-compose reads .env beside the file).
cat >"$WORK/.env" <<EOF
POSTGRES_PASSWORD=$(openssl rand -hex 16)
CALLHOOK_SDKAPPIDS=$APP
CALLHOOK_TOKEN=$TOKEN
CALLHOOK_TLS_DIR=$WORK/tls
CALLHOOK_HTTP_PUBLISH=127.0.0.1:$HTTP_PORT
CALLHOOK_HTTPS_PUBLISH=127.0.0.1:$HTTPS_PORT
EOF
ok "CA and a certificate for localhost; nginx publishes 127.0.0.1:$HTTP_PORT (80) and 127.0.0.1:$HTTPS_PORT (443)"

# --- up, one service at a time, each once what it depends on is healthy ----------------
network=${PROJECT}_$NETWORK_KEY
podman network create --subnet "$SUBNET" "$network" >/dev/null || fail "podman network create $network"
compose_up=1

# wait_healthy SERVICE SECONDS: `podman healthcheck run` until it passes.
wait_healthy() {
  local name=${PROJECT}_$1_1 deadline=$(($(date +%s) + $2)) out
  while :; do
    [[ $(podman inspect --format '{{.State.Running}}' "$name" 2>/dev/null) == true ]] ||
      fail "$1 is not running ($(podman inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$name" 2>&1))"
    out=$(podman healthcheck run "$name" 2>&1) && break
    (($(date +%s) < deadline)) || fail "$1 not healthy within $2 s: $out"
    sleep 1
  done
}

# up SERVICE [podman run flags]: podman-compose up -d for one service (its dependencies,
# already running, are left as they are).
up() {
  local service=$1 run_args="--cgroup-parent $cgroup_parent"
  shift
  (($#)) && run_args+=" $*"
  compose --podman-run-args="$run_args" up -d --no-build "$service" >"$WORK/up-$service.log" 2>&1 ||
    { cat "$WORK/up-$service.log" >&2; fail "podman-compose up -d $service"; }
}

step "podman-compose up (project $PROJECT, network $network $SUBNET)"
t_up=$(date +%s)
up postgres
wait_healthy postgres 90
ok "postgres healthy (pg_isready) after $(($(date +%s) - t_up)) s"
up callhook
wait_healthy callhook 60
ok "callhook healthy (callhook healthcheck) after $(($(date +%s) - t_up)) s"
up nginx --ip "$NGINX_IP"
wait_healthy nginx 30
ok "nginx healthy (its own /nginx-health over TLS) at $NGINX_IP after $(($(date +%s) - t_up)) s"
for service in postgres callhook nginx; do
  [[ $(podman inspect --format '{{.State.Running}}' "${PROJECT}_${service}_1") == true ]] ||
    fail "$service is not running"
done
[[ $(podman inspect --format '{{.HostConfig.ReadonlyRootfs}}' "${PROJECT}_callhook_1") == true ]] ||
  fail "callhook's root filesystem is not read-only"

# --- a callback through nginx over TLS, stored in PostgreSQL ---------------------------
step "a signed callback through nginx (https://localhost:$HTTPS_PORT), stored in PostgreSQL"
HTTPS=https://localhost:$HTTPS_PORT
QUERY="sdkappid=$APP&command=call_end&contenttype=json&clientip=127.0.0.1&optplatform=iOS"
body=$(printf '{"UserId":"Alice","RoomId":"r1","TotalNum":2,"MediaType":"audio","CallType":"single","CallId":"%s","Role":"caller","CallResult":"normal_end","EventTime":1704856890,"StartCallTs":1704856873,"AcceptTs":1704856876,"EndTs":1704856885}' "$CALL_ID")
psql_() { podman exec "${PROJECT}_postgres_1" psql -X -q -At -U "$PG_USER" -d "$PG_DB" -c "$1"; }
# Unsigned first: refused, so the token from compose.override.yaml is in force.
answer=$(curl -sS --max-time 10 --cacert "$WORK/ca.pem" -w ' %{http_code}' "$HTTPS/?$QUERY" -d "$body") ||
  fail "curl to nginx over TLS: $answer"
[[ $answer == '{"ErrorCode":'[1-9]* ]] || fail "an unsigned callback was answered: $answer"
ok "unsigned: refused ($answer)"
# Tencent's signing: Sign = hex SHA-256 of the token followed by RequestTime.
request_time=$(date +%s)
sign=$(printf '%s%s' "$TOKEN" "$request_time" | sha256sum | cut -c1-64)
answer=$(curl -sS --max-time 10 --cacert "$WORK/ca.pem" -w ' %{http_code}' \
  "$HTTPS/?$QUERY&RequestTime=$request_time&Sign=$sign" -d "$body") || fail "curl to nginx over TLS: $answer"
[[ $answer == '{"ErrorCode":0,'*' 200' ]] || fail "the signed callback through nginx was answered: $answer"
ok "signed (Sign, RequestTime): answered $answer (verified against the test CA)"
count=$(psql_ "SELECT count(*) FROM call_events WHERE call_id = '$CALL_ID'") || fail "psql in the postgres container"
[[ $count == 1 ]] || fail "call_events has $count rows with call_id $CALL_ID, expected 1"
row=$(psql_ "SELECT user_id, remote_addr, deliveries FROM call_events WHERE call_id = '$CALL_ID'")
[[ $row == Alice\|*\|1 ]] || fail "the stored row: [$row]"
remote=$(cut -d'|' -f2 <<<"$row")
# nginx is callhook's trusted proxy: the stored address is the client nginx saw, not nginx.
[[ -n $remote && $remote != "$NGINX_IP" ]] ||
  fail "remote_addr is [$remote]: nginx's X-Forwarded-For was not believed (trusted proxy $NGINX_IP)"
ok "stored once in PostgreSQL (psql in the postgres container): $row (remote_addr is the client nginx saw)"

# --- port 80 ---------------------------------------------------------------------------
step "port 80 (http://localhost:$HTTP_PORT)"
redirect=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code} %{redirect_url}' \
  "http://localhost:$HTTP_PORT/?sdkappid=$APP") || fail "curl to port 80"
[[ $redirect == "301 https://localhost/?sdkappid=$APP" ]] || fail "port 80 answered [$redirect], expected a 301 to https"
ok "port 80 redirects: $redirect"

# --- certificate renewal: new files in the directory, then a reload --------------------
step "certificate renewal (docs/src/deploy.md)"
serial() { openssl s_client -connect "127.0.0.1:$HTTPS_PORT" -servername localhost </dev/null 2>/dev/null |
  openssl x509 -noout -serial; }
before=$(serial)
[[ $before == "$(openssl x509 -noout -serial -in "$WORK/cert1.pem")" ]] || fail "nginx serves [$before], not the certificate given"
make_cert "$WORK/cert2" || fail "making the renewed certificate"
cp "$WORK/cert2.pem" "$WORK/tls/fullchain.pem"
cp "$WORK/cert2.key" "$WORK/tls/privkey.pem"
compose exec nginx nginx -s reload </dev/null >"$WORK/reload.log" 2>&1 ||
  { cat "$WORK/reload.log" >&2; fail "podman-compose exec nginx nginx -s reload"; }
want=$(openssl x509 -noout -serial -in "$WORK/cert2.pem")
after=
for _ in $(seq 1 20); do
  after=$(serial)
  [[ $after == "$want" ]] && break
  sleep 0.5
done
[[ $after == "$want" ]] || fail "after the reload nginx serves [$after], expected the renewed [$want]"
answer=$(curl -sS --max-time 10 --cacert "$WORK/ca.pem" -w ' %{http_code}' \
  "$HTTPS/?$QUERY&RequestTime=$request_time&Sign=$sign" -d "$body") || fail "curl after the reload: $answer"
[[ $answer == '{"ErrorCode":0,'*' 200' ]] || fail "the callback repeated after the reload was answered: $answer"
wait_healthy nginx 10
ok "renewed certificate served after podman-compose exec nginx nginx -s reload ($before -> $after), no restart"

# --- the monitoring profile: Prometheus -------------------------------------------------
step "monitoring profile: Prometheus scrapes callhook"
up prometheus
target=
deadline=$(($(date +%s) + 60))
while :; do
  [[ $(podman inspect --format '{{.State.Running}}' "${PROJECT}_prometheus_1" 2>/dev/null) == true ]] ||
    fail "prometheus is not running"
  target=$(podman exec "${PROJECT}_prometheus_1" promtool query instant http://127.0.0.1:9090 \
    'up{job="callhook"}' 2>&1) || true
  [[ $target == *'instance="callhook:8080"'*'=> 1 @'* ]] && break
  (($(date +%s) < deadline)) || fail "Prometheus' callhook target is not up within 60 s: $target"
  sleep 2
done
ok "Prometheus (deploy/prometheus/prometheus.yml) has callhook's target up: $target"

# --- down ------------------------------------------------------------------------------
step "podman-compose down -v"
compose down -v -t 10 >"$WORK/down.log" 2>&1 || { cat "$WORK/down.log" >&2; fail "podman-compose down -v"; }
left=$(podman ps -aq --filter "label=io.podman.compose.project=$PROJECT"; podman volume ls -q --filter "label=io.podman.compose.project=$PROJECT")
[[ -z $left ]] || fail "left after down -v: $left"
compose_up=
podman network rm "$network" >/dev/null || fail "podman network rm $network"
network=
ok "no container or volume of the project is left"

echo "== compose: took $(($(date +%s) - started)) s"
echo "compose: $passed passed, 0 failed"

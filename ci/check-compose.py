#!/usr/bin/python3
"""Checks the structure of compose.yaml, and that it agrees with the files it uses.

Debian bookworm's podman-compose (1.0.3) has no `config` command, and its `--dry-run`
still creates volumes and networks, so CI validates the file with this script instead
(PyYAML, Debian's python3-yaml). It checks what `docker compose up` relies on and what
a typo would break silently:

- the three services, each with an image (and Prometheus and Grafana in the
  `monitoring` profile, with their configuration mounted); callhook built from this repository's
  Dockerfile; every named volume and network declared; depends_on names services;
- every bind-mounted host path exists; nginx gets deploy/nginx/callhook.conf as a site
  and the TLS directory its ssl_certificate lines point into;
- nginx's upstream names the callhook service on the port the image listens on;
- callhook trusts exactly nginx's fixed address, which lies in the network's subnet;
- callhook's database URL names the postgres service, its user and database;
- callhook keeps its data volume at the image's VOLUME, with a read-only root;
- nginx has a health check, starts once callhook is healthy, publishes 80 (the site file's
  redirect to https) and 443.

A `${VAR:-default}` in a volume or port is checked with its default.

Usage: ci/check-compose.py [compose.yaml]   (exit 1 and one line per problem)
"""

import ipaddress
import os
import re
import sys
from urllib.parse import urlsplit

import yaml

problems = []


def check(cond, message):
    if not cond:
        problems.append(message)
    return cond


def resolved(text):
    """A compose string with each ${VAR:-default} (or ${VAR-default}) replaced by its default."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", str(text))


def mounts_of(service):
    """(source, target) of each volume entry, with defaults substituted."""
    return [tuple(resolved(m).split(":")[:2]) for m in service.get("volumes") or []]


def env_of(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "compose.yaml"
    root = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)

    services = doc.get("services") or {}
    always = {n for n, svc in services.items() if not svc.get("profiles")}
    check(
        always == {"postgres", "callhook", "nginx"},
        f"services without a profile are {sorted(always)}, expected callhook, nginx, postgres",
    )
    monitoring = {n for n, svc in services.items() if "monitoring" in (svc.get("profiles") or [])}
    check(
        monitoring == {"prometheus", "grafana"},
        f"the monitoring profile has {sorted(monitoring)}, expected grafana, prometheus",
    )
    prometheus = services.get("prometheus") or {}
    mounts = " ".join(str(v) for v in prometheus.get("volumes") or [])
    for needed in ("deploy/prometheus/prometheus.yml", "deploy/prometheus/alerts.yml"):
        check(needed in mounts, f"prometheus: {needed} is not mounted")
    scrape = open(os.path.join(root, "deploy/prometheus/prometheus.yml"), encoding="utf-8").read()
    check("callhook:8080" in scrape, "deploy/prometheus/prometheus.yml does not scrape callhook:8080")
    grafana = services.get("grafana") or {}
    mounts = " ".join(str(v) for v in grafana.get("volumes") or [])
    for needed in ("deploy/grafana/provisioning", "deploy/grafana/dashboards"):
        check(needed in mounts, f"grafana: {needed} is not mounted")
    volumes = set((doc.get("volumes") or {}).keys())
    networks = doc.get("networks") or {}

    for name, svc in services.items():
        check("image" in svc or "build" in svc, f"{name}: no image and no build")
        for dep in svc.get("depends_on") or []:
            check(dep in services, f"{name}: depends_on unknown service {dep}")
        nets = svc.get("networks") or []
        for net in nets if isinstance(nets, list) else nets.keys():
            check(net in networks, f"{name}: network {net} is not declared")
        for source, _target in mounts_of(svc):
            if source.startswith(("./", "/", "../")):
                check(
                    os.path.exists(os.path.join(root, source)),
                    f"{name}: bind mount source {source} does not exist",
                )
            else:
                check(source in volumes, f"{name}: volume {source} is not declared")

    dockerfile = open(os.path.join(root, "Dockerfile"), encoding="utf-8").read()
    callhook = services.get("callhook") or {}
    nginx = services.get("nginx") or {}
    postgres = services.get("postgres") or {}

    # callhook: built from this repository, data on the image's volume, read-only root.
    build = callhook.get("build")
    context = build if isinstance(build, str) else (build or {}).get("context")
    check(
        context is not None
        and os.path.exists(os.path.join(root, context, "Dockerfile")),
        "callhook: not built from this repository's Dockerfile",
    )
    image_volume = re.search(r'^VOLUME \["([^"]+)"\]', dockerfile, re.M)
    targets = [t for _, t in mounts_of(callhook)]
    check(
        image_volume is not None and image_volume.group(1) in targets,
        f"callhook: no volume at the image's VOLUME ({image_volume and image_volume.group(1)})",
    )
    check(callhook.get("read_only") is True, "callhook: read_only is not true")
    check("stop_grace_period" in callhook, "callhook: no stop_grace_period")

    # nginx: the site file and the certificates.
    site_mount = [t for s, t in mounts_of(nginx) if s == "./deploy/nginx/callhook.conf"]
    if check(site_mount, "nginx: deploy/nginx/callhook.conf is not mounted"):
        check(
            site_mount[0].startswith("/etc/nginx/conf.d/"),
            "nginx: callhook.conf is not mounted into /etc/nginx/conf.d/",
        )
    site = open(os.path.join(root, "deploy/nginx/callhook.conf"), encoding="utf-8").read()
    mount_targets = [t for _, t in mounts_of(nginx)]
    for cert in re.findall(r"^\s*ssl_certificate(?:_key)?\s+(\S+);", site, re.M):
        check(
            any(cert.startswith(t.rstrip("/") + "/") for t in mount_targets),
            f"nginx: {cert} is not inside a mounted directory",
        )
    # nginx: healthy before anything relies on it, after callhook is; 80 redirects.
    check("test" in (nginx.get("healthcheck") or {}), "nginx: no healthcheck")
    deps = nginx.get("depends_on") or {}
    check(
        isinstance(deps, dict)
        and (deps.get("callhook") or {}).get("condition") == "service_healthy",
        "nginx: not depends_on callhook with condition service_healthy",
    )
    published = {resolved(p).rsplit(":", 1)[-1] for p in nginx.get("ports") or []}
    check({"80", "443"} <= published, f"nginx: publishes {sorted(published)}, expected 80 and 443")
    check(
        re.search(r"listen 80;(?:(?!server\s*\{).)*?return 301 https://\$host\$request_uri;", site, re.S),
        "callhook.conf: no `listen 80` server that redirects to https",
    )
    check(re.search(r"^\s*listen 443 ssl;", site, re.M), "callhook.conf: no `listen 443 ssl`")

    upstream = re.search(r"upstream callhook \{\s*server ([^:;\s]+):(\d+)", site)
    listen = re.search(r"^ENV CALLHOOK_LISTEN=[^:]+:(\d+)", dockerfile, re.M)
    if check(upstream, "callhook.conf: no `upstream callhook { server HOST:PORT`"):
        check(
            upstream.group(1) == "callhook",
            f"callhook.conf: upstream host {upstream.group(1)} is not the callhook service",
        )
        check(
            listen is not None and upstream.group(2) == listen.group(1),
            "callhook.conf: upstream port is not the image's CALLHOOK_LISTEN port",
        )

    # Trust: exactly nginx's fixed address, inside the declared subnet.
    env = env_of(callhook)
    nginx_nets = nginx.get("networks") or {}
    addresses = [
        (net, (cfg or {}).get("ipv4_address"))
        for net, cfg in (nginx_nets.items() if isinstance(nginx_nets, dict) else [])
    ]
    addresses = [(n, a) for n, a in addresses if a]
    if check(addresses, "nginx: no fixed ipv4_address"):
        net, addr = addresses[0]
        check(
            env.get("CALLHOOK_TRUSTED_PROXIES") == addr,
            f"callhook: CALLHOOK_TRUSTED_PROXIES is {env.get('CALLHOOK_TRUSTED_PROXIES')}, nginx is {addr}",
        )
        subnets = [
            c.get("subnet")
            for c in ((networks.get(net) or {}).get("ipam") or {}).get("config") or []
        ]
        check(
            any(ipaddress.ip_address(addr) in ipaddress.ip_network(s) for s in subnets if s),
            f"nginx: {addr} is not in network {net}'s subnet {subnets}",
        )

    # The database URL points at the postgres service with its user and database.
    url = urlsplit(env.get("CALLHOOK_DATABASE_URL", ""))
    pg_env = env_of(postgres)
    check(url.scheme in ("postgres", "postgresql"), "callhook: database URL is not postgres://")
    check(url.hostname == "postgres", f"callhook: database host {url.hostname} is not the postgres service")
    check(url.username == pg_env.get("POSTGRES_USER"), "callhook: database user differs from POSTGRES_USER")
    check(url.path.lstrip("/") == pg_env.get("POSTGRES_DB"), "callhook: database name differs from POSTGRES_DB")
    check(
        "CALLHOOK_SDKAPPIDS" in env or "CALLHOOK_CONFIG" in env,
        "callhook: no SDKAppID configured",
    )

    for p in problems:
        print(f"{path}: {p}")
    if problems:
        sys.exit(1)
    print(f"{path}: structure ok ({len(services)} services)")


if __name__ == "__main__":
    main()

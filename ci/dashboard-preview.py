#!/usr/bin/python3
"""Draws callhook's Grafana dashboard with real data, without Grafana: a picture for the book.

Starts `callhook serve` (embedded SQLite, in a temporary directory, on a free port) with
one app (1400000001, with a TRTC key, a secret key for reconcile and an api_url pointing at
`callhook send --record-api`, Tencent's call record API played locally) and one forwarding
destination (a small receiver in this script that answers 2xx, sometimes 500, sometimes
too late, and is down for a while in the middle); starts a real Prometheus scraping it
every 2 s; sends a few minutes of generated traffic through the real HTTP endpoints (status
callbacks of every CallResult, some without talk time, some retried, some malformed, some
for an unknown app, some too large; TRTC room callbacks, signed, a few with a wrong Sign)
at a rate that rises and falls. Then runs every panel's queries of
deploy/grafana/dashboards/callhook.json through Prometheus's /api/v1/query_range over the
traffic window, lays the panels out on the dashboard's 24-column grid in an HTML page (line
charts as inline SVG, stat panels as a number), and screenshots it with headless Chromium.

Builds nothing: give it a callhook binary (default target/release/callhook, else
target/debug/callhook). Needs prometheus, chromium (Debian's packages), python3 only.

Usage: python3 ci/dashboard-preview.py [--binary PATH] [--minutes 3] [--out PNG] [--html FILE]
Prints the panels drawn and those whose queries returned no data (and why).
"""

import argparse
import base64
import hashlib
import heapq
import hmac
import glob
import html
import http.client
import json
import math
import os
import queue
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APP = 1400000001
TRTC_KEY = "previewTrtcKey2026"
SECRET_KEY = "preview-secret-key"
SCRAPE = 2  # seconds

# Why a panel can stay empty in this run: shown on the panel and in the summary.
WHY_EMPTY = {
    "callhook_journal_": "the outage journal is PostgreSQL's; this run used SQLite (see --postgres)",
    "callhook_task_restarts_total": "no task restarted (the counter appears with a first restart)",
    "callhook_room_callbacks_": "the room check judges room callbacks that arrived 30 to 90 min "
    "before it runs; a run of minutes has none that old (0 of 0: no ratio)",
    "callhook_rollup_errors_total": "no rollup pass failed",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, what, proc, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            sys.exit(f"{what} exited ({proc.returncode}) before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.2)
    sys.exit(f"{what} not ready after {timeout} s ({url})")


# ---------------------------------------------------------------- the forward destination

class Destination:
    """A forwarding destination: 2xx mostly, 500 for 3 %, too slow for 2 %, 503 while down."""

    def __init__(self):
        self.down = False
        self.received = 0
        dest = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                r = random.random()
                if dest.down:
                    code = 503
                elif r < 0.03:
                    code = 500
                elif r < 0.05:
                    time.sleep(1.5)  # past the destination's timeout_ms
                    code = 200
                else:
                    code = 204
                    dest.received += 1
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the default, 5, drops connections callhook opens at once

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


# ---------------------------------------------------------------- PostgreSQL (--postgres)

class Postgres:
    """A throwaway cluster (the newest /usr/lib/postgresql/*/bin, or CALLHOOK_PG_BIN) on a
    loopback port; as root it runs as the postgres user (initdb refuses root)."""

    def __init__(self, work):
        dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
        self.bin = os.environ.get("CALLHOOK_PG_BIN") or (dirs[-1] if dirs else None)
        if not self.bin:
            sys.exit("--postgres: no /usr/lib/postgresql/*/bin (set CALLHOOK_PG_BIN)")
        self.dir = os.path.join(work, "pg")
        os.makedirs(self.dir)
        self.user = None
        if os.geteuid() == 0:
            known = subprocess.run(["id", "postgres"], capture_output=True).returncode == 0
            self.user = "postgres" if known else "nobody"
            os.chmod(work, 0o755)
            subprocess.run(["chown", "-R", self.user, self.dir], check=True)
        self.port = free_port()
        self.data = os.path.join(self.dir, "data")
        self.run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C")
        self.start()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, prog, *args):
        cmd = [os.path.join(self.bin, prog), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self):
        opts = f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.dir}"
        self.run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "server.log"), "-o", opts, "-w", "start")

    def stop(self):
        self.run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")


# ---------------------------------------------------------------- traffic

class Sender:
    """Worker threads posting deliveries over keep-alive connections; counts answers."""

    def __init__(self, port, workers=6):
        self.port = port
        self.q = queue.Queue(maxsize=5000)
        self.answers = {}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.work, daemon=True) for _ in range(workers)]
        for t in self.threads:
            t.start()

    def work(self):
        conn = None
        while True:
            item = self.q.get()
            if item is None:
                return
            path, headers, body = item
            for _ in range(2):
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    conn.request("POST", path, body=body, headers=headers)
                    resp = conn.getresponse()
                    resp.read()
                    key = resp.status
                    break
                except (OSError, http.client.HTTPException):
                    conn = None
                    key = "connection error"
            with self.lock:
                self.answers[key] = self.answers.get(key, 0) + 1

    def post(self, path, body, headers=None):
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        self.q.put((path, h, body if isinstance(body, bytes) else body.encode()))

    def close(self):
        for _ in self.threads:
            self.q.put(None)
        for t in self.threads:
            t.join(timeout=30)


RESULTS = [("normal_end", 62), ("not_answer", 12), ("reject", 8), ("cancel", 9),
           ("call_busy", 4), ("interrupt", 5)]


def pick_result(rng):
    r = rng.uniform(0, sum(w for _, w in RESULTS))
    for name, w in RESULTS:
        r -= w
        if r <= 0:
            return name
    return RESULTS[0][0]


def status_query(sdkappid):
    return (f"/?sdkappid={sdkappid}&command=call_end&contenttype=json"
            "&clientip=10.0.0.7&optplatform=Android")


def one_call(rng, n, now, due):
    """Schedules one call's callbacks with due(at, path, body, headers): TRTC's room events of
    its room (for half of the calls) as they happen, then the caller's and the callee's
    call_end a few seconds after the call ends; with the odd retry and malformed delivery."""
    call_id = f"preview-{n:06d}-{rng.randrange(16**6):06x}"
    room = str(48_000_000 + n)
    result = pick_result(rng)
    start = now
    if result == "normal_end":
        accept = start + rng.uniform(2, 12)
        talk = 0 if rng.random() < 0.12 else 1 + rng.expovariate(1 / 40)
        end = accept + talk
    else:
        accept = 0
        end = start + rng.uniform(3, 30)
    lag = rng.choice([1, 1, 2, 2, 3, 4, 6]) + rng.random() * (30 if rng.random() < 0.05 else 2)
    for user, role in (("caller-%d" % n, "caller"), ("callee-%d" % n, "callee")):
        body = json.dumps({
            "UserId": user, "RoomId": room, "TotalNum": 2,
            "MediaType": rng.choice(["audio", "video"]), "CallType": "single",
            "CallId": call_id, "Role": role, "CallResult": result,
            "EventTime": int(end) + 1, "StartCallTs": int(start), "AcceptTs": int(accept),
            "EndTs": int(end),
        })
        at = end + lag + rng.random()
        due(at, status_query(APP), body, None)
        if rng.random() < 0.06:  # Tencent retried: the same body again
            due(at + rng.choice([1, 2, 3]), status_query(APP), body, None)
    r = rng.random()
    if r < 0.015:
        due(end, status_query(APP), '{"UserId": "broken", "CallId": ', None)  # 71001
    elif r < 0.025:
        due(end, status_query(1400009999), '{"CallId": "x"}', None)  # 71101: unknown app
    elif r < 0.028:
        due(end, status_query(APP), '{"pad": "' + "x" * 70_000 + '"}', None)  # 71203
    if rng.random() < 0.5:
        room_events(rng, due, room, start, accept, end, (f"caller-{n}", f"callee-{n}"))


def room_events(rng, due, room, start, accept, end, users):
    a, b = users
    joined = accept or end
    events = [(101, start, a, {}), (103, start + 0.2, a, {"Role": 20}),
              (103, joined, b, {"Role": 20}), (104, end, b, {"Reason": 1}),
              (104, end + 0.1, a, {"Reason": 1}), (102, end + 1, None, {})]
    for ty, at, user, extra in events:
        info = {"RoomId": room, "EventTs": int(at), "EventMsTs": int(at * 1000)}
        if user:
            info["UserId"] = user
        info.update(extra)
        sent = at + rng.uniform(0.05, 0.9)
        body = json.dumps({"EventGroupId": ty // 100, "EventType": ty,
                           "CallbackTs": int(sent * 1000), "EventInfo": info})
        sign = base64.b64encode(hmac.new(TRTC_KEY.encode(), body.encode(), hashlib.sha256).digest()).decode()
        if rng.random() < 0.01:
            sign = "AAAA" + sign[4:]  # a wrong Sign: 71102, kept
        due(sent, "/trtc", body, {"SdkAppId": str(APP), "Sign": sign})


def traffic(port, seconds, dest, rng, pg=None):
    """Calls starting at a rate that rises and falls (3 to 13 a second, more in a burst at
    two thirds), each sending its callbacks when they are due; the destination down for a
    fifth of the run, and with pg PostgreSQL too (stopped at 40 %, started at 55 %).
    Callbacks not due by the end (calls still going) are not sent."""
    sender = Sender(port)
    start = time.time()
    heap, seq = [], [0]

    def due(at, path, body, headers):
        seq[0] += 1
        heapq.heappush(heap, (at, seq[0], path, body, headers))

    n = 0
    down_from, down_to = seconds * 0.35, seconds * 0.55
    next_tick = start
    outage = "before" if pg else "none"
    while True:
        now = time.time()
        t = now - start
        if t >= seconds:
            break
        dest.down = down_from <= t < down_to
        if outage == "before" and t >= seconds * 0.40:
            threading.Thread(target=pg.stop, daemon=True).start()
            outage = "during"
        elif outage == "during" and t >= seconds * 0.55:
            threading.Thread(target=pg.start, daemon=True).start()
            outage = "after"
        if now >= next_tick:
            next_tick += 1
            rate = 8 + 5 * math.sin(2 * math.pi * t / (seconds / 1.5))
            if seconds * 0.66 <= t < seconds * 0.70:
                rate *= 2.5
            for _ in range(int(rate) + (rng.random() < rate % 1)):
                n += 1
                one_call(rng, n, now + rng.random(), due)
        while heap and heap[0][0] <= now:
            _, _, path, body, headers = heapq.heappop(heap)
            sender.post(path, body, headers)
        time.sleep(0.02)
    dest.down = False
    sender.close()
    return n, sender.answers


# ---------------------------------------------------------------- Prometheus queries

def query_range(prom, expr, start, end, step):
    qs = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"http://127.0.0.1:{prom}/api/v1/query_range?{qs}", timeout=60) as r:
        out = json.load(r)
    if out.get("status") != "success":
        raise RuntimeError(f"{expr}: {out}")
    return out["data"]["result"]


def legend(fmt, metric):
    if not fmt:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items())) + "}" if metric else "value"
    out = fmt
    for k, v in metric.items():
        out = out.replace("{{" + k + "}}", v).replace("{{ " + k + " }}", v)
    return re.sub(r"\{\{\s*\w+\s*\}\}", "", out).strip() or "value"


def to_float(v):
    try:
        f = float(v)
    except ValueError:
        return None
    return f if math.isfinite(f) else None


# ---------------------------------------------------------------- drawing

PALETTE = ["#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9",
           "#705DA0", "#508642", "#CCA300", "#447EBC", "#C15C17"]
CELL_H, GAP = 30, 8


def fmt_value(v, unit):
    if v is None:
        return "–"
    if unit == "percentunit":
        return f"{v * 100:.1f}%" if abs(v) < 0.1 else f"{v * 100:.0f}%"
    if unit == "s":
        if v == 0:
            return "0 s"
        if abs(v) < 1:
            return f"{v * 1000:.3g} ms"
        return f"{v:.3g} s"
    suffix = {"reqps": " req/s", "ops": " ops/s"}.get(unit, "")
    a = abs(v)
    if a >= 1e6:
        s = f"{v / 1e6:.3g}M"
    elif a >= 1e3:
        s = f"{v / 1e3:.3g}K"
    elif a == 0 or a >= 1:
        s = f"{v:.3g}"
    else:
        s = f"{v:.2g}"
    return s + suffix


def nice_ticks(lo, hi, n=4):
    if hi <= lo:
        hi = lo + (abs(lo) or 1)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    first = math.floor(lo / step) * step
    ticks = []
    i = 0
    while not ticks or ticks[-1] < hi - step * 1e-9:
        ticks.append(first + i * step)
        i += 1
    return ticks


def svg_chart(series, unit, w, h, t0, t1):
    """Line chart of [(name, color, [(t, v|None)])] as SVG text."""
    ml, mr, mt, mb = 62, 10, 8, 22
    pw, ph = w - ml - mr, h - mt - mb
    vals = [v for _, _, pts in series for _, v in pts if v is not None]
    lo, hi = min(vals + [0]), max(vals + [0])
    if unit == "percentunit" and hi <= 1:
        hi = max(hi, 0.01)
    ticks = nice_ticks(lo, hi)
    lo, hi = ticks[0], ticks[-1]
    X = lambda t: ml + (t - t0) / (t1 - t0) * pw
    Y = lambda v: mt + ph - (v - lo) / (hi - lo) * ph
    out = [f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">']
    for v in ticks:
        y = Y(v)
        out.append(f'<line x1="{ml}" x2="{w - mr}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{ml - 6}" y="{y + 4:.1f}" text-anchor="end">{html.escape(fmt_value(v, unit))}</text>')
    span = t1 - t0
    most = max(2, int(pw // 75))  # time labels that fit side by side
    tstep = next((s for s in (15, 30, 60, 120, 300, 600, 1800, 3600) if span / s <= most), 7200)
    t = math.ceil(t0 / tstep) * tstep
    while t <= t1:
        x = X(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{mt}" y2="{mt + ph}" class="grid"/>')
        label = datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M:%S" if tstep < 60 else "%H:%M")
        out.append(f'<text x="{x:.1f}" y="{h - 6}" text-anchor="middle">{label}</text>')
        t += tstep
    for _, color, pts in series:
        segs, cur = [], []
        for t, v in pts:
            if v is None:
                if cur:
                    segs.append(cur)
                cur = []
            else:
                cur.append(f"{X(t):.1f},{Y(v):.1f}")
        if cur:
            segs.append(cur)
        for s in segs:
            if len(s) == 1:
                x, y = s[0].split(",")
                out.append(f'<circle cx="{x}" cy="{y}" r="2" fill="{color}"/>')
            else:
                out.append(f'<polyline points="{" ".join(s)}" fill="none" stroke="{color}" stroke-width="1.6"/>')
    out.append("</svg>")
    return "".join(out)


CSS = """
body { margin: 0; background: #f4f5f5; font: 13px/1.3 "DejaVu Sans", Arial, sans-serif; color: #24292e; }
header { padding: 12px 16px 0; height: 72px; box-sizing: border-box; overflow: hidden; }
header h1 { font-size: 20px; margin: 0 0 4px; font-weight: 600; }
header p { margin: 0; color: #555; font-size: 12px; }
.grid-root { position: relative; margin: 8px; }
.panel { position: absolute; background: #fff; border: 1px solid #dcdee1; border-radius: 3px;
         box-sizing: border-box; overflow: hidden; }
.panel h2 { font-size: 13px; font-weight: 600; margin: 6px 8px 2px; white-space: nowrap;
            overflow: hidden; text-overflow: ellipsis; }
.row { position: absolute; font-size: 16px; font-weight: 600; padding-top: 6px; box-sizing: border-box; }
svg text { font-size: 10.5px; fill: #555; }
svg .grid { stroke: #e6e7e8; stroke-width: 1; }
.legend { margin: 0 8px; font-size: 11.5px; line-height: 1.35; }
.legend span.item { display: inline-block; margin-right: 12px; white-space: nowrap; }
.legend i { display: inline-block; width: 14px; height: 3px; vertical-align: middle; margin-right: 4px; }
.legend b { font-weight: 600; }
.nodata { position: absolute; left: 0; right: 0; top: 45%; text-align: center; color: #777; padding: 0 12px; }
.nodata small { display: block; color: #999; margin-top: 4px; font-size: 11px; }
.stat { position: absolute; left: 0; right: 0; top: 30%; text-align: center; font-size: 56px; font-weight: 600; }
.stat small { display: block; font-size: 12px; color: #777; font-weight: 400; margin-top: 4px; }
"""


def why_empty(exprs):
    for key, why in WHY_EMPTY.items():
        if any(key in e for e in exprs):
            return why
    return ""


def render(dash, data, t0, t1, width, subtitle):
    """The HTML page and its content height; data maps a panel id to its series."""
    col = (width - 16 + GAP) / 24
    body, bottom = [], 0
    for p in dash["panels"]:
        g = p["gridPos"]
        x, y = g["x"] * col, g["y"] * (CELL_H + GAP)
        w, h = g["w"] * col - GAP, g["h"] * (CELL_H + GAP) - GAP
        bottom = max(bottom, y + h)
        style = f"left:{x:.0f}px;top:{y:.0f}px;width:{w:.0f}px;height:{h:.0f}px"
        title = html.escape(p.get("title", ""))
        if p["type"] == "row":
            body.append(f'<div class="row" style="{style}">{title}</div>')
            continue
        series, exprs = data[id(p)]
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        inner = [f'<div class="panel" style="{style}"><h2>{title}</h2>']
        has = [s for s in series if any(v is not None for _, v in s[2])]
        if not has:
            why = why_empty(exprs)
            inner.append(f'<div class="nodata">No data<small>{html.escape(why)}</small></div>')
        elif p["type"] == "stat":
            name, _, pts = has[0]
            last = next(v for _, v in reversed(pts) if v is not None)
            inner.append(f'<div class="stat" style="color:#56A64B">{html.escape(fmt_value(last, unit))}'
                         f'<small>{html.escape(name)} (last value)</small></div>')
        else:
            legend_h = 18 * math.ceil(len(has) / max(1, int(w // 230)))
            chart_h = int(h - 26 - legend_h - 4)
            inner.append(svg_chart(has, unit, int(w - 2), chart_h, t0, t1))
            items = []
            for name, color, pts in has:
                vs = [v for _, v in pts if v is not None]
                items.append(f'<span class="item"><i style="background:{color}"></i>{html.escape(name)} '
                             f'<b>{html.escape(fmt_value(vs[-1], unit))}</b></span>')
            inner.append(f'<div class="legend">{"".join(items)}</div>')
        inner.append("</div>")
        body.extend(inner)
    height = 72 + 8 + int(bottom) + 8
    page = (f"<!doctype html><html><head><meta charset='utf-8'><style>{CSS}</style></head><body>"
            f"<header><h1>{html.escape(dash.get('title', 'dashboard'))}</h1><p>{html.escape(subtitle)}</p></header>"
            f'<div class="grid-root" style="height:{bottom:.0f}px">{"".join(body)}</div></body></html>')
    return page, height


# ---------------------------------------------------------------- main

def fill_vars(expr, rate_interval, step):
    for k, v in {"$__rate_interval": rate_interval, "$__interval": f"{step}s",
                 "$instance": ".*", "$sdkappid": ".*", "$family": "status",
                 "${instance}": ".*", "${sdkappid}": ".*", "${family}": "status"}.items():
        expr = expr.replace(k, v)
    return expr


def panels_of(dash):
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows hold their panels
    return out


def find_binary(arg):
    for b in ([arg] if arg else [os.path.join(ROOT, "target/release/callhook"),
                                 os.path.join(ROOT, "target/debug/callhook")]):
        if os.access(b, os.X_OK):
            return os.path.abspath(b)
    sys.exit(f"no callhook binary ({arg or 'target/release/callhook, target/debug/callhook'}): "
             "cargo build --release --bin callhook")


def start(procs, argv, log, **kw):
    p = subprocess.Popen(argv, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                         start_new_session=True, **kw)
    procs.append(p)
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", help="callhook binary (default target/release/callhook, else target/debug/callhook)")
    ap.add_argument("--minutes", type=float, default=3.0, help="minutes of traffic (default 3)")
    ap.add_argument("--dashboard", default=os.path.join(ROOT, "deploy/grafana/dashboards/callhook.json"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs/src/dashboard-preview.png"))
    ap.add_argument("--html", help="also keep the HTML page here")
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--step", type=int, default=5, help="query step in seconds ($__interval; default 5)")
    ap.add_argument("--rate-interval", default="30s", help="what $__rate_interval stands for (default 30s)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--postgres", action="store_true",
                    help="store in a throwaway PostgreSQL cluster instead of SQLite, and stop it "
                    "for 15 %% of the run (the outage journal's panels then have data)")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")
    args = ap.parse_args()

    binary = find_binary(args.binary)
    if args.postgres:
        WHY_EMPTY.pop("callhook_journal_")
    for tool in ("prometheus", args.chromium):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (apt-get install prometheus chromium)")
    dash = json.load(open(args.dashboard))
    work = tempfile.mkdtemp(prefix="callhook-dash-")
    procs = []
    rng = random.Random(args.seed)
    try:
        run(args, binary, dash, work, procs, rng)
    finally:
        for p in reversed(procs):
            if isinstance(p, Postgres):
                try:
                    p.stop()
                except subprocess.CalledProcessError:
                    pass
            elif p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(args, binary, dash, work, procs, rng):
    port, prom, record_api = free_port(), free_port(), free_port()
    pg = Postgres(work) if args.postgres else None
    if pg:
        procs.append(pg)
    db_url = pg.url if pg else f"sqlite://{work}/callhook.db"
    dest = Destination()
    secret = "whsec_" + base64.b64encode(bytes(rng.randrange(256) for _ in range(32))).decode()
    config = f"""listen = "127.0.0.1:{port}"
[database]
url = "{db_url}"
[spool]
dir = "{work}/spool"
[reconcile]
interval = "1m"
window = "1d"
[[apps]]
sdkappid = {APP}
trtc_key = "{TRTC_KEY}"
secret_key = "{SECRET_KEY}"
api_url = "http://127.0.0.1:{record_api}"
[[forward]]
name = "push"
url = "http://127.0.0.1:{dest.port}/hooks/calls"
secret = "{secret}"
families = ["status", "v4"]
timeout_ms = 1000
retry_schedule = ["0s", "2s", "5s", "10s", "20s", "30s", "1m"]
"""
    open(f"{work}/callhook.toml", "w").write(config)
    serve = start(procs, [binary, "serve", "--config", f"{work}/callhook.toml"], f"{work}/serve.log",
                  env={**os.environ, "RUST_LOG": "warn"})
    wait_http(f"http://127.0.0.1:{port}/readyz", "callhook serve", serve)
    open(f"{work}/prometheus.yml", "w").write(
        f"global:\n  scrape_interval: {SCRAPE}s\n  evaluation_interval: {SCRAPE}s\n"
        f"scrape_configs:\n  - job_name: callhook\n    static_configs:\n"
        f"      - targets: [\"127.0.0.1:{port}\"]\n")
    promp = start(procs, ["prometheus", f"--config.file={work}/prometheus.yml",
                          f"--storage.tsdb.path={work}/tsdb", f"--web.listen-address=127.0.0.1:{prom}"],
                  f"{work}/prometheus.log")
    wait_http(f"http://127.0.0.1:{prom}/-/ready", "prometheus", promp)

    # Tencent's call record API for reconcile: `callhook send` plays it, after sending 60
    # calls of the last day (a tenth of them withheld, so that reconcile finds calls no
    # callback announced). Sent before the window drawn: their callbacks arrive hours
    # after their calls, which would swamp the callback-lag panel.
    summary = f"{work}/send-summary.json"
    send = start(procs, [binary, "send", "--sdkappid", str(APP), "--url", f"http://127.0.0.1:{port}/",
                         "--family", "status", "--calls", "60", "--seed", str(args.seed),
                         "--record-api", f"127.0.0.1:{record_api}", "--record-api-key", SECRET_KEY,
                         "--summary-json", summary, "-q"], f"{work}/send.log")
    end = time.time() + 60
    while not os.path.exists(summary) and time.time() < end:
        if send.poll() is not None:
            sys.exit(f"callhook send exited: {open(f'{work}/send.log').read()}")
        time.sleep(0.5)
    print(f"record API on 127.0.0.1:{record_api}; 60 calls of the last day sent before the window", flush=True)
    time.sleep(int(args.rate_interval.rstrip("s")) + SCRAPE if args.rate_interval.endswith("s") else 35)

    seconds = int(args.minutes * 60)
    t0 = time.time()
    print(f"sending {seconds} s of traffic to 127.0.0.1:{port} (Prometheus on 127.0.0.1:{prom})", flush=True)
    calls, answers = traffic(port, seconds, dest, rng, pg)
    time.sleep(3 * SCRAPE + 1)
    t1 = time.time()
    if serve.poll() is not None:
        sys.exit(f"callhook serve exited during the run: {open(f'{work}/serve.log').read()[-2000:]}")
    print(f"{calls} calls sent; answers by HTTP status: {dict(sorted(answers.items(), key=str))}; "
          f"the destination took {dest.received} events", flush=True)

    data, drawn, empty = {}, [], []
    for p in panels_of(dash):
        if p["type"] == "row":
            continue
        series, exprs = [], []
        for t in p.get("targets", []):
            e = fill_vars(t.get("expr", ""), args.rate_interval, args.step)
            exprs.append(e)
            for r in query_range(prom, e, t0, t1, args.step):
                pts = [(float(ts), to_float(v)) for ts, v in r["values"]]
                series.append((legend(t.get("legendFormat"), r["metric"]), PALETTE[len(series) % len(PALETTE)], pts))
        data[id(p)] = (series, exprs)
        if any(v is not None for _, _, pts in series for _, v in pts):
            drawn.append(p["title"])
        else:
            empty.append((p["title"], why_empty(exprs)))

    minutes = f"{args.minutes:g}"
    subtitle = (f"callhook's dashboard panels, drawn by ci/dashboard-preview.py from a live Prometheus "
                f"scraping callhook every {SCRAPE} s under {minutes} minutes of generated traffic "
                f"($__rate_interval = {args.rate_interval}, step {args.step} s, all instances and apps, "
                f"calls counted from the status family; times UTC). Stored in "
                + ("PostgreSQL, stopped from 40 % to 55 % of the run; " if args.postgres else "SQLite; ")
                + "the forwarding destination answered 503 from 35 % to 55 %. Not a Grafana screenshot.")
    page, height = render(dash, data, t0, t1, args.width, subtitle)
    page_path = args.html or f"{work}/dashboard.html"
    open(page_path, "w").write(page)
    shot(args.chromium, page_path, args.out, args.width, height, work)
    print(f"\n{args.out}: {os.path.getsize(args.out) // 1024} KB, {args.width}x{height}")
    print(f"panels drawn with data ({len(drawn)}): " + "; ".join(drawn))
    print(f"panels without data ({len(empty)}):")
    for title, why in empty:
        print(f"  - {title}: {why or 'NOT EXPLAINED: look at the queries and the traffic'}")


def shot(chromium, page, out, width, height, work):
    tmp = os.path.join(work, "shot.png")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--force-device-scale-factor=1", f"--user-data-dir={work}/chromium",
           f"--window-size={width},{height}", f"--screenshot={tmp}", "file://" + os.path.abspath(page)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if not os.path.exists(tmp):
        sys.exit(f"chromium made no screenshot: {r.stderr[-2000:]}")
    if shutil.which("optipng"):  # optional: a smaller file, same pixels
        subprocess.run(["optipng", "-quiet", "-o2", tmp], check=False)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    shutil.copyfile(tmp, out)


if __name__ == "__main__":
    main()

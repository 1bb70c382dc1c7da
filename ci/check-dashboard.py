#!/usr/bin/python3
"""Checks the Grafana dashboard against callhook: every query parses (promtool, as a
recording rule, with the dashboard's variables filled in), and every metric a query names
is one callhook exports (the names in src/metrics.rs; a histogram's _bucket, _sum and
_count too). With a second argument, a /metrics text taken from a running callhook, also
lists the dashboard's metrics that text lacks (a warning: some appear only once something
happens, e.g. forwarding or reconcile).

Usage: ci/check-dashboard.py [DASHBOARD.json] [METRICS.txt]   (exit 1 and a line per problem)
"""

import json
import os
import re
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "deploy/grafana/dashboards/callhook.json")
dash = json.load(open(path))

# What the dashboard's variables stand for in a query.
fill = {"$__rate_interval": "5m", "$instance": ".*", "$sdkappid": ".*", "$family": "status"}

exprs = []
def walk(panels):
    for p in panels:
        walk(p.get("panels", []))
        for t in p.get("targets", []):
            e = t.get("expr", "")
            for k, v in fill.items():
                e = e.replace(k, v)
            exprs.append((p.get("title", "?"), e))
walk(dash.get("panels", []))

problems = []
leftover = [(t, e) for t, e in exprs if "$" in e]
for t, e in leftover:
    problems.append(f"{t}: a variable the check does not know: {e}")

source = open(os.path.join(root, "src/metrics.rs")).read()
exported = set(re.findall(r'"(callhook_[a-z_]+)"', source))
for t, e in exprs:
    for name in set(re.findall(r"\bcallhook_[a-z_]+", e)):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in exported and base not in exported:
            problems.append(f"{t}: {name} is not a metric callhook exports (src/metrics.rs)")

with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (t, e) in enumerate(exprs):
        f.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(e)}\n")
    rules = f.name
try:
    out = subprocess.run(["promtool", "check", "rules", rules], capture_output=True, text=True)
    if out.returncode != 0:
        problems.append("promtool cannot parse every query:\n" + out.stdout + out.stderr)
finally:
    os.unlink(rules)

if len(sys.argv) > 2:
    live = open(sys.argv[2]).read()
    named = {re.sub(r"_(bucket|sum|count)$", "", n) for _, e in exprs for n in re.findall(r"\bcallhook_[a-z_]+", e)}
    missing = sorted(n for n in named if not re.search(rf"^{n}(_bucket|_sum|_count)?[{{ ]", live, re.M))
    if missing:
        print(f"note: not (yet) in the live /metrics: {', '.join(missing)}")

for p in problems:
    print(f"{path}: {p}")
if problems:
    sys.exit(1)
print(f"{path}: {len(exprs)} queries parse and name only metrics callhook exports")

#!/usr/bin/env bash
# Mass-export benchmark (issue 15, "Measure against the simplest alternative").
#
# The simulator (`restorectl simulate`, release build, no artificial delays) with MAILBOXES
# mailboxes of 1 MiB each (±25 % per mailbox, the simulator's spread) in its paging organisation.
# Side by side, ROUNDS times, alternating:
#   - script:     a plain bash script with curl and `xargs -P 8`: token, organisations, explore,
#                 list the mailboxes (pages of 1,000, restorectl's default page size), one
#                 exportToPst per mailbox into a file, stop the session. No durability, no
#                 hashes, no state, no retries.
#   - restorectl: one ExportPst job over `{ all: true }` with `stepParallelism: 8`, executed by
#                 `restorectl run JOB --foreground` (the daemon's run engine in one process, on
#                 the embedded SQLite store): fsync, SHA-256, manifests, state.
# Each round writes into a new export directory and (restorectl) a new state directory; the
# files are deleted after the last round (see the note on ext4 below).
# Prints per round and as medians: wall time (process start to exit) of both, the ratio,
# API calls per mailbox of both (counted by the simulator, `GET /sim/stats`), and restorectl's
# peak RSS (wait4 ru_maxrss). Then one more restorectl run with SQL statement logging
# (`RUST_LOG=sqlx::query=debug`, not timed) that counts the database writes per step
# (INSERT/UPDATE/DELETE statements, and transactions). Then, unless BIG=0, one restorectl run
# over BIG mailboxes (default 10,000): wall time, peak RSS, and how long `restorectl show RUN`
# and `restorectl show RUN --json` take on that run.
#
# Targets: restorectl <= 1.25x the script's wall time (median of the rounds), API calls per
# mailbox <= the script's + 0.01, peak RSS <= 128 MiB (also with BIG mailboxes), `show` < 1 s.
# Not a test: it only prints.
#
# Usage: bench/mass-export.sh [MAILBOXES] [ROUNDS]   (defaults: 2000 mailboxes, 3 rounds)
#        BIG=0 bench/mass-export.sh                  (skip the 10,000-mailbox run)
#        SIZE=262144 bench/mass-export.sh            (bytes per mailbox, default 1 MiB)
#        BENCH_DIR=/dev/shm/b bench/mass-export.sh   (work on tmpfs; default a temp dir)
#        BIN=path/to/restorectl bench/mass-export.sh (default: cargo build --release)
# Needs curl, jq, xargs and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

MAILBOXES=${1:-2000}
ROUNDS=${2:-3}
BIG=${BIG:-10000}
SIZE=${SIZE:-1048576}
PORT=${PORT:-47643}

for tool in curl jq xargs python3; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done

if [[ -z "${BIN:-}" ]]; then
  cargo build --release --quiet --bin restorectl
  BIN=$PWD/target/release/restorectl
fi

WORK=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$WORK"
SIM_PID=
cleanup() {
  [[ -n "$SIM_PID" ]] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null || true
  [[ -z "${BENCH_DIR:-}" ]] && rm -rf "$WORK"
  return 0
}
trap cleanup EXIT

# The plain script: what an administrator would write in an afternoon.
cat > "$WORK/script.sh" <<'SCRIPT'
#!/usr/bin/env bash
# usage: script.sh BASE_URL ORGANIZATION OUT_DIR
set -euo pipefail
base=$1 org_name=$2 out=$3
mkdir -p "$out"
token=$(curl -sSf -X POST "$base/v8/token" \
  --data-urlencode grant_type=password --data-urlencode 'username=CONTOSO\svc-restore' \
  --data-urlencode password=restorectl-dev | jq -r .access_token)
auth="Authorization: Bearer $token"
org=$(curl -sSf -H "$auth" "$base/v8/Organizations" \
  | jq -r --arg n "$org_name" '.results[] | select(.name == $n) | .id')
rs=$(curl -sSf -X POST -H "$auth" -H 'Content-Type: application/json' -d '{"type":"Vex"}' \
  "$base/v8/Organizations/$org/explore" | jq -r .id)
offset=0
: > "$out/ids"
while :; do
  page=$(curl -sSf -H "$auth" "$base/v8/RestoreSessions/$rs/organization/mailboxes?offset=$offset&limit=1000")
  n=$(jq '.results | length' <<<"$page")
  jq -r '.results[].id' <<<"$page" >> "$out/ids"
  offset=$((offset + n))
  [[ $n -lt 1000 ]] && break
done
export base rs auth out
xargs -P 8 -n 1 sh -c 'curl -sSf -o "$out/$1.pst" -X POST -H "$auth" \
  -H "Content-Type: application/json" -d "{}" \
  "$base/v8/RestoreSessions/$rs/organization/mailboxes/$1/exportToPst"' sh < "$out/ids"
curl -sSf -o /dev/null -X POST -H "$auth" "$base/v8/RestoreSessions/$rs/Stop"
SCRIPT
chmod +x "$WORK/script.sh"

start_sim() { # MAILBOXES
  [[ -n "$SIM_PID" ]] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null || true
  cat > "$WORK/sim.yaml" <<YAML
simulator:
  pagingOrgMailboxes: $1
  exportDefaultSize: $SIZE
  exportBuildDelay: 0s
  restoreDelay: 0s
YAML
  RUST_LOG=warn "$BIN" simulate --config "$WORK/sim.yaml" --listen "127.0.0.1:$PORT" \
    > "$WORK/sim.log" 2>&1 &
  SIM_PID=$!
  for _ in $(seq 1 100); do
    # Alive and answering: a stray server on the same port must not stand in for ours.
    kill -0 "$SIM_PID" 2>/dev/null || break
    curl -s -o /dev/null "http://127.0.0.1:$PORT/sim/stats" && return 0
    sleep 0.1
  done
  echo "the simulator did not start:" >&2; cat "$WORK/sim.log" >&2; exit 1
}

write_config() { # DIR
  mkdir -p "$1/jobs" "$1/secrets"
  echo restorectl-dev > "$1/secrets/vb365-password"
  cat > "$1/restorectl.yaml" <<YAML
jobsDir: jobs
stateDir: state
exportRoot: exports
secretsDir: secrets
listen: "off"
timezone: UTC
stepParallelism: 8
log: { format: text, level: warn }
servers:
  sim:
    url: http://127.0.0.1:$PORT
    username: CONTOSO\\svc-restore
    password: { secret: vb365-password }
YAML
  cat > "$1/jobs/tenant-export.yaml" <<'YAML'
apiVersion: restorectl/v1
kind: ExportPst
metadata: { name: tenant-export }
spec:
  organization: fabrikam.onmicrosoft.com
  mailboxes: [ { all: true } ]
  export: { path: "{job}/{date}/{mailbox}.pst" }
YAML
}

for i in $(seq 1 "$ROUNDS") sql; do write_config "$WORK/restorectl-$i"; done
start_sim "$MAILBOXES"
python3 - "$BIN" "$WORK" "$MAILBOXES" "$ROUNDS" "$PORT" <<'PY'
import json, os, shutil, statistics, subprocess, sys, time, urllib.request

bin_, work, mailboxes, rounds, port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
base = f"http://127.0.0.1:{port}"

def stats():
    with urllib.request.urlopen(f"{base}/sim/stats") as r:
        return json.load(r)["requests"]

def timed(argv, **kw):
    """Runs argv; returns (wall seconds, peak RSS MiB of that process, exit status)."""
    t = time.monotonic()
    p = subprocess.Popen(argv, **kw)
    _, status, usage = os.wait4(p.pid, 0)
    return time.monotonic() - t, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)

def count_files(d):
    return sum(len([f for f in fs if f.endswith(".pst")]) for _, _, fs in os.walk(d))

def script_round(i):
    out = os.path.join(work, f"script-{i}")
    before = stats()
    wall, _, code = timed([os.path.join(work, "script.sh"), base, "fabrikam.onmicrosoft.com", out],
                          stderr=open(os.path.join(work, f"script-{i}.log"), "w"))
    calls = stats() - before
    files = count_files(out)
    if code != 0 or files != mailboxes:
        sys.exit(f"script round {i}: exit {code}, {files} files; see {work}/script-{i}.log")
    return wall, calls

def restorectl_round(i, env=None):
    d = os.path.join(work, f"restorectl-{i}")
    before = stats()
    log = os.path.join(work, f"restorectl-{i}.log")
    wall, rss, code = timed([bin_, "--config", os.path.join(d, "restorectl.yaml"), "run", "tenant-export", "--foreground"],
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env)
    calls = stats() - before
    files = count_files(os.path.join(d, "exports"))
    if code != 0 or files != mailboxes:
        sys.exit(f"restorectl round {i}: exit {code}, {files} files; see {log}")
    return wall, calls, rss, log

rows = []
for i in range(1, rounds + 1):
    s_wall, s_calls = script_round(i)
    r_wall, r_calls, rss, _ = restorectl_round(i)
    rows.append((s_wall, r_wall, s_calls, r_calls, rss))
    print(f"round {i}: script {s_wall:6.2f} s  restorectl {r_wall:6.2f} s  ratio {r_wall / s_wall:.3f}  "
          f"calls/mailbox {s_calls / mailboxes:.4f} vs {r_calls / mailboxes:.4f}  peak RSS {rss:.1f} MiB",
          flush=True)
med = lambda k: statistics.median(r[k] for r in rows)
print(f"mailboxes:              {mailboxes} x ~{int(os.environ.get('SIZE', 1048576)) / 1048576:.2f} MiB, stepParallelism 8, {rounds} rounds")
print(f"script wall (median):   {med(0):.2f} s")
print(f"restorectl wall (med.): {med(1):.2f} s")
print(f"ratio:                  {med(1) / med(0):.3f}   (target <= 1.25)")
print(f"API calls per mailbox:  script {med(2) / mailboxes:.4f}, restorectl {med(3) / mailboxes:.4f}   (target <= script + 0.01)")
print(f"peak RSS:               {max(r[4] for r in rows):.1f} MiB   (target <= 128 MiB)")

# Outputs are deleted only now: ext4 skips recently freed inodes when it allocates new ones,
# which made deleting 2,000 files just before a round a tax on whichever side ran next.
for name in os.listdir(work):
    if name.startswith("script-") and os.path.isdir(os.path.join(work, name)):
        shutil.rmtree(os.path.join(work, name))
    if name.startswith("restorectl-"):
        shutil.rmtree(os.path.join(work, name, "exports"), ignore_errors=True)

# Database writes per step, from sqlx's statement log (one more, untimed round).
env = dict(os.environ, RUST_LOG="warn,sqlx::query=debug,restorectl::store::tx=trace")
_, _, _, log = restorectl_round("sql", env=env)
verbs = {}
transactions = {}
for line in open(log, errors="replace"):
    if "restorectl::store::tx" in line and " op=" in line:
        op = line.split(" op=", 1)[1].split()[0].strip('"')
        transactions[op] = transactions.get(op, 0) + 1
        continue
    if "sqlx::query" not in line or "summary=" not in line:
        continue
    summary = line.split("summary=", 1)[1].strip().strip('"').lstrip()
    verb = summary.split(" ", 1)[0].upper() if summary else "?"
    verbs[verb] = verbs.get(verb, 0) + 1
writes = sum(verbs.get(v, 0) for v in ("INSERT", "UPDATE", "DELETE"))
print(f"database statements:    {dict(sorted(verbs.items()))}")
print(f"database writes/step:   {writes / mailboxes:.2f} (INSERT/UPDATE/DELETE statements per mailbox, run overhead included)")
print(f"write transactions:     {sum(transactions.values()) / mailboxes:.2f} per step: "
      + ", ".join(f"{op} {n}" for op, n in sorted(transactions.items(), key=lambda kv: -kv[1])))
PY

if [[ "$BIG" -gt 0 ]]; then
  start_sim "$BIG"
  d="$WORK/restorectl-big"
  write_config "$d"
  python3 - "$BIN" "$d" "$BIG" <<'PY'
import os, shutil, subprocess, sys, time

bin_, d, mailboxes = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = os.path.join(d, "restorectl.yaml")
t = time.monotonic()
p = subprocess.Popen([bin_, "--config", cfg, "run", "tenant-export", "--foreground"],
                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "run.log"), "w"))
_, status, usage = os.wait4(p.pid, 0)
wall = time.monotonic() - t
if os.waitstatus_to_exitcode(status) != 0:
    sys.exit(f"the {mailboxes}-mailbox run failed; see {d}/run.log")
files = sum(len([f for f in fs if f.endswith(".pst")]) for _, _, fs in os.walk(os.path.join(d, "exports")))
shutil.rmtree(os.path.join(d, "exports"))
print(f"{mailboxes} mailboxes:       wall {wall:.1f} s, {files} files, peak RSS {usage.ru_maxrss / 1024:.1f} MiB   (target <= 128 MiB)")
run = subprocess.run([bin_, "--config", cfg, "runs", "tenant-export", "--json"],
                     capture_output=True, text=True, check=True)
import json
runs = json.loads(run.stdout)
runs = runs.get("runs", runs) if isinstance(runs, dict) else runs
run_id = runs[0]["id"]
for extra in ([], ["--json"]):
    best = None
    for _ in range(3):
        t = time.monotonic()
        out = subprocess.run([bin_, "--config", cfg, "show", run_id] + extra,
                             capture_output=True, text=True)
        dt = time.monotonic() - t
        if out.returncode != 0:
            sys.exit(f"show {run_id}: exit {out.returncode}: {out.stderr}")
        best = dt if best is None else min(best, dt)
    print(f"show RUN {' '.join(extra) or '(text)':<7}        {best:.3f} s (best of 3), {len(out.stdout) / 1024:.0f} KiB of output   (target < 1 s)")
PY
fi

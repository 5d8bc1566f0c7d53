#!/usr/bin/env bash
# Search benchmark (issue 15, "Streaming search"): one organisation-wide Search job whose search
# the simulator answers with 1,000,000 generated hits (`syntheticSearchHits`, built page by page,
# so the simulator holds none of them), run by the real daemon (release build). Prints the
# daemon's peak RSS (VmHWM, target <= 64 MiB: memory must be flat in the number of hits), the
# run's wall time (run started → finished, from the state database: every page fetched, written
# to the part file, fsynced and recorded, then the report published), the pages per second, and
# the report's size.
#
# Usage: bench/search.sh                  (1,000,000 hits, jsonl)
#        HITS=200000 FORMAT=csv bench/search.sh
#        PAGE_SIZE=500 bench/search.sh    (pageSize of the daemon, default 1000)
#        BENCH_DIR=/dev/shm/b bench/search.sh   (state and report on tmpfs; default a temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."

HITS=${HITS:-1000000}
FORMAT=${FORMAT:-jsonl}
PAGE_SIZE=${PAGE_SIZE:-1000}
PORT=${PORT:-47543}

command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is required" >&2; exit 1; }

if [[ -z "${BIN:-}" ]]; then
  cargo build --release --quiet --bin restorectl
  BIN=$PWD/target/release/restorectl
fi

WORK=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$WORK"/{jobs,secrets,exports}
SIM_PID=
cleanup() {
  [[ -n "$SIM_PID" ]] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null || true
  [[ -z "${BENCH_DIR:-}" ]] && rm -rf "$WORK"
  return 0
}
trap cleanup EXIT

cat > "$WORK/sim.yaml" <<YAML
simulator:
  syntheticSearchHits: $HITS
YAML
"$BIN" simulate --config "$WORK/sim.yaml" --listen "127.0.0.1:$PORT" > "$WORK/sim.log" 2>&1 &
SIM_PID=$!
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/v8/Health" && break
  sleep 0.1
done

echo restorectl-dev > "$WORK/secrets/vb365-password"
cat > "$WORK/restorectl.yaml" <<YAML
jobsDir: jobs
stateDir: state
exportRoot: exports
secretsDir: secrets
listen: "off"
timezone: UTC
pageSize: $PAGE_SIZE
log: { format: text, level: info }
servers:
  sim:
    url: http://127.0.0.1:$PORT
    username: CONTOSO\\svc-restore
    password: { secret: vb365-password }
YAML
cat > "$WORK/jobs/search.yaml" <<YAML
apiVersion: restorectl/v1
kind: Search
metadata: { name: big-search }
spec:
  organization: contoso.onmicrosoft.com
  search:
    query: 'subject:report'
    report: { path: "{job}/search.$FORMAT", format: $FORMAT }
YAML

python3 - "$BIN" "$WORK" "$HITS" "$FORMAT" "$PAGE_SIZE" <<'PY'
import os, sqlite3, subprocess, sys, time

bin_, work, hits, fmt, page_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
env = dict(os.environ)
env.pop("RUST_LOG", None)
proc = subprocess.Popen([bin_, "daemon", "--config", os.path.join(work, "restorectl.yaml")],
                        env=env, stdout=subprocess.DEVNULL,
                        stderr=open(os.path.join(work, "daemon.log"), "w"))

def status(key):
    for line in open(f"/proc/{proc.pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024

db_path = os.path.join(work, "state", "restorectl.db")
deadline = time.monotonic() + 3600
run = None
rss_samples = []
while time.monotonic() < deadline:
    if proc.poll() is not None:
        sys.exit(f"the daemon exited: see {work}/daemon.log")
    rss_samples.append(status("VmRSS"))
    if os.path.exists(db_path):
        try:
            db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1)
            run = db.execute("SELECT id, state, started_at, finished_at, reason FROM runs "
                             "WHERE job_name = 'big-search'").fetchone()
            db.close()
        except sqlite3.Error:
            run = None
        if run and run[1] in ("succeeded", "succeeded_with_warnings", "failed", "cancelled",
                              "needs_attention"):
            break
    time.sleep(0.2)
else:
    sys.exit("the run did not finish within an hour")
peak = status("VmHWM")
proc.terminate()
proc.wait(timeout=60)
if run[1] != "succeeded":
    sys.exit(f"run {run[0]} ended {run[1]}: {run[4]}")
wall = (run[3] - run[2]) / 1000
report = os.path.join(work, "exports", "big-search", f"search.{fmt}")
size = os.path.getsize(report)
pages = hits // page_size + 1
print(f"hits:                {hits} ({fmt}, pageSize {page_size}, {pages} pages)")
print(f"daemon peak RSS:     {peak:.1f} MiB (VmHWM; target <= 64 MiB); RSS sampled every 0.2 s: max {max(rss_samples):.1f} MiB")
print(f"run wall time:       {wall:.1f} s (run started -> finished, report published), {pages / wall:.0f} pages/s, {hits / wall:.0f} hits/s")
print(f"report:              {size / (1 << 20):.1f} MiB")
PY

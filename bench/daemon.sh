#!/usr/bin/env bash
# Benchmark: `restorectl daemon` over 10,000 generated job files (scheduled ExportPst jobs in
# 100 subdirectories). Prints:
#   - time to READY (from process start to `READY=1` on $NOTIFY_SOCKET, like systemd sees it),
#   - RSS once ready and after the idle minute,
#   - CPU used while idle over 60 s (utime+stime from /proc), as a percentage of one core,
#   - latency from rewriting one job file to the store reflecting it (median and max of 5);
#   - then, with a run history of HISTORY runs (default 1,500,000: 150 weekly runs per job,
#     almost three years, written straight into the state database while the daemon is
#     stopped), the same daemon restarted: time to READY, RSS and idle CPU again.
# Targets: READY <= 5 s, change seen <= 1 s, idle CPU < 1 % (with and without history),
# RSS <= 96 MiB. Not a test: it only prints. `history.keepFor` is set beyond the generated
# history so that the idle window measures the periodic reads, not the pruner.
# The jobs fire once a year (1 January, spread over every hour and minute) so that "idle" means
# idle: with daily schedules a few of the 10,000 jobs fall due every minute and the window
# would measure runs (against a server that does not exist) instead of the daemon at rest.
#
# Usage: bench/daemon.sh [FILES] [IDLE_SECONDS]   (defaults: 10000 files, 60 s)
#        HISTORY=0 bench/daemon.sh                  (skip the second part)
#        BIN=path/to/restorectl bench/daemon.sh   (default: cargo build --release)
set -euo pipefail

files=${1:-10000}
idle=${2:-60}
cd "$(dirname "$0")/.."

if [[ -z "${BIN:-}" ]]; then
  cargo build --release --quiet
  BIN=$PWD/target/release/restorectl
fi

tmp=$(mktemp -d)
pid=
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

mkdir -p "$tmp/secrets" "$tmp/exports" "$tmp/jobs"
echo dummy > "$tmp/secrets/vb365-password"
cat > "$tmp/restorectl.yaml" <<'YAML'
jobsDir: jobs
stateDir: state
exportRoot: exports
secretsDir: secrets
listen: "off"
timezone: Europe/Berlin
log: { format: text, level: warn }
history: { keepFor: 1200d }
servers:
  primary:
    url: https://vb365.example.test:4443
    username: CONTOSO\svc-restore
    password: { secret: vb365-password }
YAML

awk -v n="$files" -v dir="$tmp/jobs" 'BEGIN {
  for (i = 0; i < n; i++) {
    sub_dir = sprintf("%s/team-%02d", dir, i % 100)
    if (i < 100) system("mkdir -p " sub_dir)
    f = sprintf("%s/job-%05d.yaml", sub_dir, i)
    print "apiVersion: restorectl/v1" > f
    print "kind: ExportPst" > f
    print "metadata: { name: job-" sprintf("%05d", i) " }" > f
    print "spec:" > f
    print "  organization: contoso.onmicrosoft.com" > f
    print "  mailboxes: [ user" (i % 2500) "@fabrikam.com ]" > f
    print "  schedule: { cron: \"" (i % 60) " " (i % 24) " 1 1 *\", startingDeadline: 1h }" > f
    print "  export: { path: \"{job}/{date}/{mailbox}.pst\" }" > f
    close(f)
  }
}'

python3 - "$BIN" "$tmp" "$files" "$idle" "${HISTORY:-1500000}" <<'PY'
import os, socket, sqlite3, statistics, subprocess, sys, time

bin_, tmp, files, idle = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
history = int(sys.argv[5])
hz = os.sysconf("SC_CLK_TCK")
sock_path = os.path.join(tmp, "notify.sock")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(sock_path)
env = dict(os.environ, NOTIFY_SOCKET=sock_path)
env.pop("RUST_LOG", None)
# Read notifications like systemd does (a full datagram queue would block the sender).
import queue, threading
notes = queue.Queue()
threading.Thread(target=lambda: [notes.put(sock.recv(4096).decode()) for _ in iter(int, 1)],
                 daemon=True).start()
proc = None

def start():
    global proc
    t = time.monotonic()
    proc = subprocess.Popen([bin_, "daemon", "--config", os.path.join(tmp, "restorectl.yaml")],
                            env=env, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(tmp, "daemon.log"), "a"))
    with open(os.path.join(tmp, "pid"), "w") as f:
        f.write(str(proc.pid))
    while True:
        msg = notes.get(timeout=300)
        if "READY=1" in msg:
            return time.monotonic() - t, [l for l in msg.splitlines() if l.startswith("STATUS=")]

def stop():
    proc.terminate()
    t = time.monotonic()
    try:
        proc.wait(60)
        print(f"exit after SIGTERM:  {time.monotonic() - t:.2f} s")
    except subprocess.TimeoutExpired:
        print("exit after SIGTERM:  still running after 60 s; last log lines:")
        print("".join(open(os.path.join(tmp, "daemon.log")).readlines()[-15:]))
        proc.kill()

def rss_mib():
    for line in open(f"/proc/{proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
def cpu_s():
    fields = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / hz

def idle_cpu():
    # Let the first scheduler pass (next fires of every job) settle, then measure idle.
    time.sleep(5)
    c0, t0 = cpu_s(), time.monotonic()
    time.sleep(idle)
    c1, t1 = cpu_s(), time.monotonic()
    print(f"idle CPU over {idle} s:  {100 * (c1 - c0) / (t1 - t0):.2f} % of one core   (target < 1 %; includes the periodic 60 s rescan)")
    print(f"RSS after idle:      {rss_mib():.1f} MiB   (target <= 96 MiB)")

ready, status = start()
print(f"job files:           {files}")
print(f"time to READY:       {ready:.2f} s   (target <= 5 s)   {status[0] if status else ''}")
print(f"RSS at READY:        {rss_mib():.1f} MiB")
idle_cpu()

db = sqlite3.connect(f"file:{tmp}/state/restorectl.db?mode=ro", uri=True)
def version(name):
    row = db.execute("SELECT active_version_id FROM jobs WHERE name = ?", (name,)).fetchone()
    return row[0] if row else None
lat = []
for k in range(5):
    i = 42 + 1000 * k
    name = f"job-{i:05d}"
    path = os.path.join(tmp, "jobs", f"team-{i % 100:02d}", f"{name}.yaml")
    text = open(path).read().replace("fabrikam.com ]", f"fabrikam.com, edit{k}@fabrikam.com ]")
    before = version(name)
    tmpf = path + ".tmp"
    open(tmpf, "w").write(text)
    t = time.monotonic()
    os.rename(tmpf, path)
    while version(name) == before:
        if time.monotonic() - t > 30:
            sys.exit(f"{name}: change not seen within 30 s")
        time.sleep(0.005)
    lat.append(time.monotonic() - t)
    time.sleep(1)
print(f"change seen after:   median {statistics.median(lat):.3f} s, max {max(lat):.3f} s   (target <= 1 s; includes the 500 ms debounce)")
db.close()
stop()
if history <= 0:
    sys.exit(0)

# A run history: `history` runs spread over the jobs, weekly, the newest a week ago; one run in
# 50 failed, one in 97 a missed fire. Written with one INSERT … SELECT (the triggers keep the
# counts as the daemon's own writes would).
db = sqlite3.connect(f"{tmp}/state/restorectl.db")
db.execute("PRAGMA cache_size = -400000")
per_job = max(1, history // files)
week = 7 * 24 * 3600 * 1000
newest = int(time.time() * 1000) - week
t = time.monotonic()
db.execute(f"""
    WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {history - 1}),
         j AS (SELECT name, active_version_id AS v, spec_hash,
                      ROW_NUMBER() OVER (ORDER BY name) - 1 AS k
               FROM jobs JOIN job_versions ON job_versions.id = jobs.active_version_id)
    INSERT INTO runs (id, job_name, job_version_id, spec_hash, trigger, scheduled_for, state,
                      created_at, started_at, finished_at, updated_at)
    SELECT printf('bench-%08d', i), j.name, j.v, j.spec_hash, 'schedule',
           {newest} - (i % {per_job}) * {week},
           CASE WHEN i % 50 = 7 THEN 'failed' WHEN i % 97 = 3 THEN 'missed' ELSE 'succeeded' END,
           {newest} - (i % {per_job}) * {week}, {newest} - (i % {per_job}) * {week},
           {newest} - (i % {per_job}) * {week} + 600000, {newest} - (i % {per_job}) * {week} + 600000
    FROM n JOIN j ON j.k = (i / {per_job}) % {files}""")
db.commit()
runs = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
db.close()
print(f"history:             {runs} runs written in {time.monotonic() - t:.0f} s")
ready, status = start()
print(f"time to READY:       {ready:.2f} s   (with the history)")
print(f"RSS at READY:        {rss_mib():.1f} MiB   (with the history)")
idle_cpu()
stop()
PY

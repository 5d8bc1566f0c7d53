#!/usr/bin/env bash
# Benchmark: `restorectl daemon` over 10,000 generated job files (scheduled ExportPst jobs in
# 100 subdirectories). Prints:
#   - time to READY (from process start to `READY=1` on $NOTIFY_SOCKET, like systemd sees it),
#   - RSS once ready and after the idle minute,
#   - CPU used while idle over 60 s (utime+stime from /proc), as a percentage of one core,
#   - latency from rewriting one job file to the store reflecting it (median and max of 5).
# Targets: READY <= 5 s, change seen <= 1 s, idle CPU < 1 %. Not a test: it only prints.
# The jobs fire once a year (1 January, spread over every hour and minute) so that "idle" means
# idle: with daily schedules a few of the 10,000 jobs fall due every minute and the window
# would measure runs (against a server that does not exist) instead of the daemon at rest.
#
# Usage: bench/daemon.sh [FILES] [IDLE_SECONDS]   (defaults: 10000 files, 60 s)
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

python3 - "$BIN" "$tmp" "$files" "$idle" <<'PY'
import os, socket, sqlite3, statistics, subprocess, sys, time

bin_, tmp, files, idle = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
hz = os.sysconf("SC_CLK_TCK")
sock_path = os.path.join(tmp, "notify.sock")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(sock_path)
env = dict(os.environ, NOTIFY_SOCKET=sock_path)
env.pop("RUST_LOG", None)
start = time.monotonic()
proc = subprocess.Popen([bin_, "daemon", "--config", os.path.join(tmp, "restorectl.yaml")],
                        env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "daemon.log"), "w"))
with open(os.path.join(tmp, "pid"), "w") as f:
    f.write(str(proc.pid))
sock.settimeout(120)
status = ""
while True:
    msg = sock.recv(4096).decode()
    if "READY=1" in msg:
        ready = time.monotonic() - start
        status = [l for l in msg.splitlines() if l.startswith("STATUS=")]
        break

# Keep reading notifications like systemd does (a full datagram queue would block the sender).
import threading
sock.settimeout(None)
threading.Thread(target=lambda: [sock.recv(4096) for _ in iter(int, 1)], daemon=True).start()

def rss_mib():
    for line in open(f"/proc/{proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
def cpu_s():
    fields = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / hz

print(f"job files:           {files}")
print(f"time to READY:       {ready:.2f} s   (target <= 5 s)   {status[0] if status else ''}")
print(f"RSS at READY:        {rss_mib():.1f} MiB")
# Let the first scheduler pass (next fires of every job) settle, then measure idle.
time.sleep(5)
c0, t0 = cpu_s(), time.monotonic()
time.sleep(idle)
c1, t1 = cpu_s(), time.monotonic()
print(f"idle CPU over {idle} s:  {100 * (c1 - c0) / (t1 - t0):.2f} % of one core   (target < 1 %; includes the periodic 60 s rescan)")
print(f"RSS after idle:      {rss_mib():.1f} MiB")

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
proc.terminate()
t = time.monotonic()
try:
    proc.wait(60)
    print(f"exit after SIGTERM:  {time.monotonic() - t:.2f} s")
except subprocess.TimeoutExpired:
    print("exit after SIGTERM:  still running after 60 s; last log lines:")
    print("".join(open(os.path.join(tmp, "daemon.log")).readlines()[-15:]))
    proc.kill()
PY

#!/usr/bin/env bash
# Download benchmark (issue 5): restorectl's download through the real code path against curl,
# both fetching the same simulator export endpoint over loopback to disk, for a 1 GiB and a
# 4 GiB export. Prints throughput of both, the ratio, and restorectl's peak RSS.
#
# restorectl side: examples/download_bench.rs (VB365 client → transfer with checkpoints, fdatasync
# and SHA-256 → publish with fsync, rename and manifest; progress in a SQLite file).
# The simulator serves PST bytes as zero-copy slices of a fixed pool, so the shared server costs
# both clients little CPU (2-core machines: it used to take a whole core generating ChaCha8).
# curl side: `curl -o FILE` of the same POST …/exportToPst (no hashing, no fsync).
#
# curl is measured twice: the transfer alone (its data may still sit in the page cache) and the
# transfer plus `sync -d` of the file (durable, as restorectl's file is when it reports).
#
# Each round measures both tools back to back (the order alternating); besides the best and the
# median of each tool, the script prints the median of the per-round ratios, which compares
# the tools under the same machine conditions. It also prints how fast one SHA-256 stream runs
# here alone, on cached bytes and on bytes from memory: the first is the ceiling of any
# download that hashes what it writes.
#
# Usage: bench/download.sh                         (needs ~4 GiB free in $BENCH_DIR, default a
#                                                   temp dir under $TMPDIR, i.e. on disk)
#        BENCH_DIR=/dev/shm/bench bench/download.sh (tmpfs: compares the code paths without the
#                                                   disk)
#        ROUNDS=6 bench/download.sh                (best and median of N rounds per tool, the order of the
#                                                   the tools alternating; default 4)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-4}
PORT=${PORT:-47443}
BASE="http://127.0.0.1:${PORT}"
USERNAME='CONTOSO\svc-restore'
export RESTORECTL_BENCH_PASSWORD='restorectl-dev'
GIB=$((1 << 30))

if [ ! -x /usr/bin/time ]; then
    echo "installing GNU time for peak RSS ..." >&2
    apt-get install -y -qq time >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq time; }
fi
command -v curl >/dev/null || { echo "curl is required" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is required (JSON parsing)" >&2; exit 1; }

cargo build --release --quiet --bin restorectl --example download_bench
RESTORECTL=target/release/restorectl
BENCH=target/release/examples/download_bench

WORK=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$WORK"
SIM_PID=
cleanup() {
    [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null || true
    [ -z "${BENCH_DIR:-}" ] && rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/sim.yaml" <<YAML
simulator:
  exportBuildDelay: 1ms
  exportSizes:
    alice@contoso.com: $((1 * GIB))
    bob@contoso.com: $((4 * GIB))
YAML
"$RESTORECTL" simulate --config "$WORK/sim.yaml" --listen "127.0.0.1:${PORT}" >"$WORK/sim.log" 2>&1 &
SIM_PID=$!
for _ in $(seq 1 100); do
    curl -s -o /dev/null "$BASE/v8/Health" && break
    sleep 0.1
done

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# curl needs its own token, restore session and mailbox id.
TOKEN=$(curl -sS -X POST "$BASE/v8/token" \
    --data-urlencode grant_type=password --data-urlencode "username=$USERNAME" \
    --data-urlencode "password=$RESTORECTL_BENCH_PASSWORD" --data-urlencode disable_antiforgery_token=true \
    | json 'd["access_token"]')
AUTH=(-H "Authorization: Bearer $TOKEN")
ORG=$(curl -sS "${AUTH[@]}" "$BASE/v8/Organizations" \
    | json '[o["id"] for o in (d if isinstance(d,list) else d["results"]) if o["name"]=="contoso.onmicrosoft.com"][0]')
RS=$(curl -sS "${AUTH[@]}" -H 'Content-Type: application/json' -X POST \
    -d '{"type":"Vex"}' "$BASE/v8/Organizations/$ORG/explore" | json 'd["id"]')
MAILBOXES=$(curl -sS "${AUTH[@]}" "$BASE/v8/RestoreSessions/$RS/organization/mailboxes?offset=0&limit=1000")
mailbox_id() { echo "$MAILBOXES" | json "[m['id'] for m in d['results'] if m['email']=='$1' and not m.get('isArchive')][0]"; }

# Deleting a GiB-sized file makes the disk busy for a while (ext4 mounted with `discard` trims
# its blocks): let that finish so that one measurement does not pay for the previous one's
# cleanup.
settle() { sync; sleep 2; }

curl_once() { # email -> "bytes seconds seconds_with_fdatasync"
    local id url t0 t1 out
    id=$(mailbox_id "$1")
    url="$BASE/v8/RestoreSessions/$RS/organization/mailboxes/$id/exportToPst"
    t0=$(date +%s.%N)
    out=$(curl -sS -X POST "${AUTH[@]}" -H 'Content-Type: application/json' -H 'Accept: application/octet-stream' \
        -d '{}' -o "$WORK/curl.out" -w '%{size_download} %{time_total}' "$url")
    # restorectl makes the file durable before it reports; this is curl's equivalent.
    sync -d "$WORK/curl.out"
    t1=$(date +%s.%N)
    rm -f "$WORK/curl.out"
    settle
    # The result comes last: the caller reads it through a pipe and goes on at once, so the
    # clean-up above must be over by then.
    echo "$out $(python3 -c "print($t1 - $t0)")"
}

restorectl_once() { # email -> "bytes seconds rss_kib"
    local out line rss
    out="$WORK/rc"
    /usr/bin/time -v -o "$WORK/time.txt" "$BENCH" --server "$BASE" --mailbox "$1" --out "$out" \
        --username "$USERNAME" >"$WORK/bench.out"
    line=$(cat "$WORK/bench.out")
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")
    rm -rf "$out"
    settle
    echo "$(sed -E 's/.*bytes=([0-9]+).*/\1/' <<<"$line") $(sed -E 's/.*seconds=([0-9.]+).*/\1/' <<<"$line") $rss"
}

mibs() { python3 -c "print(f'{$1 / 1048576 / $2:.0f}')"; }

sha256_rates() {
    "$BENCH" --sha256-rate | sed -E 's/sha256_cached_mib_per_s=([0-9]+) sha256_memory_mib_per_s=([0-9]+)/\1 MiB\/s on cached bytes, \2 MiB\/s on bytes from memory/'
}

echo "target file system: $(stat -f -c %T "$WORK") ($WORK); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
# The first figure is the ceiling of any download that hashes what it writes (curl does not
# hash); restorectl's hashing thread reads each 64 KiB piece once before hashing it, which gets
# it most of the way from the second figure to the first.
echo "one SHA-256 stream alone on this machine: $(sha256_rates)"
printf '%-6s %-6s %11s %13s %11s %9s %9s %13s\n' size of "curl MiB/s" "curl+fdatasync" "restorectl" "vs curl" "vs c+sync" "peak RSS MiB"
declare -A RSS
SUMMARY=()
median() { python3 -c "import statistics, sys; print(round(statistics.median(map(float, sys.argv[1:]))))" "$@"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}x')"; }
# Median, lowest and highest of the per-round ratios restorectl / curl: each round measures
# both tools back to back, so a ratio compares them under the same machine conditions, which
# drift on a shared machine far more than the tools differ.
round_ratios() { python3 -c "
import statistics, sys
r = [float(x) for x in sys.argv[1:]]
print(f'{statistics.median(r):.2f}x (lowest {min(r):.2f}x, highest {max(r):.2f}x)')" "$@"; }
for pair in "1GiB alice@contoso.com" "4GiB bob@contoso.com"; do
    set -- $pair
    label=$1 email=$2
    all_curl=() all_curl_sync=() all_rc=() ratios=() ratios_sync=() max_rss=0
    for round in $(seq 1 "$ROUNDS"); do
        # Alternate which tool goes first so that neither always gets the same slot.
        if [ $((round % 2)) -eq 1 ]; then
            read -r cb cs css < <(curl_once "$email")
            read -r rb rs rk < <(restorectl_once "$email")
        else
            read -r rb rs rk < <(restorectl_once "$email")
            read -r cb cs css < <(curl_once "$email")
        fi
        [ "$cb" = "$rb" ] || { echo "size mismatch: curl $cb vs restorectl $rb" >&2; exit 1; }
        c=$(mibs "$cb" "$cs"); cy=$(mibs "$cb" "$css"); r=$(mibs "$rb" "$rs")
        echo "  $label round $round: curl $c, curl+fdatasync $cy, restorectl $r MiB/s ($(ratio "$r" "$c") curl)" >&2
        all_curl+=("$c"); all_curl_sync+=("$cy"); all_rc+=("$r")
        ratios+=("$(python3 -c "print($r / $c)")"); ratios_sync+=("$(python3 -c "print($r / $cy)")")
        [ "$rk" -gt "$max_rss" ] && max_rss=$rk
    done
    RSS[$label]=$max_rss
    for stat in best median; do
        if [ "$stat" = best ]; then
            pick() { printf '%s\n' "$@" | sort -n | tail -1; }
        else
            pick() { median "$@"; }
        fi
        c=$(pick "${all_curl[@]}"); cy=$(pick "${all_curl_sync[@]}"); r=$(pick "${all_rc[@]}")
        printf '%-6s %-6s %11s %13s %11s %9s %9s %13s\n' "$label" "$stat" "$c" "$cy" "$r" \
            "$(ratio "$r" "$c")" "$(ratio "$r" "$cy")" "$(python3 -c "print(f'{$max_rss / 1024:.1f}')")"
    done
    SUMMARY+=("$label restorectl / curl, per round: $(round_ratios "${ratios[@]}"); / curl+fdatasync: $(round_ratios "${ratios_sync[@]}")")
done
printf '%s\n' "${SUMMARY[@]}"
python3 -c "a, b = ${RSS[1GiB]}, ${RSS[4GiB]}; print(f'peak RSS 4 GiB vs 1 GiB: {(b - a) / a * 100:+.1f}%')"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "one SHA-256 stream alone at the end: $(sha256_rates)"
echo "(best and median of $ROUNDS rounds; restorectl writes, fdatasyncs every 64 MiB, hashes, fsyncs and publishes with a manifest)"

#!/usr/bin/env bash
# make load-receiver: the receiver against its baselines, interleaved (naive, receiver,
# floor; ROUNDS times) on a private redis-server (AOF, appendfsync everysec) on a free port.
# Prints one TSV line per run and the medians; docs/BENCHMARKS.md explains the figures.
# Env: ROUNDS (3), DUR (10s), OUT (bin/load), SCENARIOS (all), VARIANTS (naive receiver
# floor; add "old" with OLD=path to another build of the binary to compare two builds in
# one interleaved run, e.g. VARIANTS="old receiver naive" OLD=/tmp/mcs-main; add "http" for
# the HTTP ceiling: gin reading the body and answering 200, no Redis); PROFILE=1 also takes a CPU
# profile of the receiver (pprof on its ops listener) during each of its closed32 runs,
# into OUT/cpu-closed32-ROUND.prof (`go tool pprof OUT/mcs OUT/cpu-closed32-1.prof`).
set -euo pipefail
ROUNDS=${ROUNDS:-3}
DUR=${DUR:-10s}
OUT=${OUT:-bin/load}
SCENARIOS=${SCENARIOS:-"closed32 open1000 open2000 big150 big500 huge40auth huge40noauth"}
VARIANTS=${VARIANTS:-"naive receiver floor"}
if [[ " $VARIANTS " == *" old "* ]] && [ ! -x "${OLD:-}" ]; then
  echo "VARIANTS has old: set OLD to the binary to compare (go build -o /tmp/mcs-old ./cmd/miitel-crm-sync at the other commit)" >&2
  exit 2
fi
TOKEN=load-token-0123456789
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LR="$OUT/loadrun"
go build -o "$OUT/mcs" ./cmd/miitel-crm-sync
go build -o "$LR" ./receiver/internal/loadrun

# freeport VAR: sets VAR to a port nothing listens on, below Linux's ephemeral range
# (32768-60999) so no outgoing connection holds it, and not one handed out before.
TAKEN=
freeport() {
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    [[ " $TAKEN " == *" $p "* ]] && continue
    (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { TAKEN="$TAKEN $p"; printf -v "$1" %s "$p"; return; }
  done
}
waitport() { for _ in $(seq 1 500); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.02; done; echo "port $1 never opened" >&2; exit 1; }

freeport RPORT
rm -rf "$OUT/redis" && mkdir -p "$OUT/redis"
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec \
  --dir "$OUT/redis" --maxmemory-policy noeviction --logfile "$OUT/redis/log" &
RPID=$!
SPID=
cleanup() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null; kill "$RPID" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
waitport "$RPORT"
R="redis-cli -p $RPORT"

"$LR" body -o "$OUT/seed.json"
"$LR" body -size 276480 -o "$OUT/big.json"       # 270 KB: the transcript grown
"$LR" body -size 10484736 -o "$OUT/huge.json"    # 10 MiB less 1 KiB: just under max_body_bytes

freeport SPORT
freeport OPORT
ADMIN=load-admin-0123456789
PPROF=false
[ -n "${PROFILE:-}" ] && PPROF=true
# The receiver logs as in production (info, JSON): its one line per request is part of
# what a request costs. The log goes to a file, as a container runtime's would.
cat > "$OUT/receiver.yaml" <<YAML
log: {level: info, format: json}
server: {listen: "127.0.0.1:$SPORT"}
redis: {url: "redis://127.0.0.1:$RPORT/0"}
ops: {listen: "127.0.0.1:$OPORT", pprof: $PPROF}
admin: {tokens: [{token: {env: LOAD_ADMIN}, role: read_write}]}
routes:
  - name: load
    auth: {bearer: [{env: LOAD_TOKEN}]}
YAML
URL="http://127.0.0.1:$SPORT/webhooks/miitel/load"

start() { # variant
  case $1 in
    naive) "$LR" naive -listen "127.0.0.1:$SPORT" -redis "127.0.0.1:$RPORT" >/dev/null & SPID=$! ;;
    http) "$LR" http -listen "127.0.0.1:$SPORT" >/dev/null & SPID=$! ;;
    receiver) LOAD_TOKEN=$TOKEN LOAD_ADMIN=$ADMIN "$OUT/mcs" receiver --config "$OUT/receiver.yaml" 2>"$OUT/receiver.log" & SPID=$! ;;
    old) LOAD_TOKEN=$TOKEN LOAD_ADMIN=$ADMIN "$OLD" receiver --config "$OUT/receiver.yaml" 2>"$OUT/receiver.log" & SPID=$! ;;
  esac
  waitport "$SPORT"
}
stop() { # prints the server's peak RSS in MB and the CPU seconds it used (user+system)
  local hwm cpu
  hwm=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' /proc/$SPID/status)
  # utime and stime, fields 14 and 15 of /proc/PID/stat (after the parenthesised name)
  cpu=$(cpu_of "$SPID")
  kill "$SPID"; wait "$SPID" 2>/dev/null || true; SPID=
  echo "$hwm $cpu"
}
reset() { $R flushall >/dev/null; $R bgrewriteaof >/dev/null 2>&1 || true; }
# cpu_of PID: the CPU seconds (user+system) PID has used so far
cpu_of() { sed 's/^.*) //' /proc/$1/stat | awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($12+$13)/hz}'; }

# one_run SCENARIO VARIANT ROUND: prints a TSV line
one_run() {
  local sc=$1 v=$2 round=$3 body=seed rate=0 conc=32 auth="Authorization: Bearer $TOKEN" res rss="-" cpu="-" chk="-"
  case $sc in
    open1000) rate=1000 ;; open2000) rate=2000 ;;
    big150) body=big rate=150 ;; big500) body=big rate=500 ;;
    huge40auth) body=huge conc=40 ;; huge40noauth) body=huge conc=40 auth="" ;;
  esac
  reset
  rm -f "$OUT"/ids.*
  local rcpu0 rcpu
  rcpu0=$(cpu_of "$RPID")
  if [ "$v" = floor ]; then
    [[ $sc == huge* ]] && return 0 # a flood of refused bodies has no enqueue floor
    res=$("$LR" floor -redis "127.0.0.1:$RPORT" -rate $rate -c $conc -duration "$DUR" -body "$OUT/$body.json")
  else
    start "$v"
    if [ "$sc" = closed32 ]; then
      local w ppid=
      if [ -n "${PROFILE:-}" ] && [ "$v" = receiver ]; then
        curl -s -o "$OUT/cpu-$sc-$round.prof" -H "Authorization: Bearer $ADMIN" \
          "http://127.0.0.1:$OPORT/debug/pprof/profile?seconds=$((${DUR%s} - 2))" & ppid=$!
      fi
      w=$(LOADRUN_BODY="$OUT/$body.json" LOADRUN_IDS="$OUT/ids" LOADRUN_AUTH="${auth#Authorization: }" \
        wrk -t2 -c32 -d"$DUR" --latency -s receiver/internal/loadrun/wrk.lua "$URL")
      res=$(echo "$w" | awk '
        function ms(s) { if (s ~ /us$/) return s/1000; if (s ~ /ms$/) return s+0; if (s ~ /s$/) return s*1000; return s }
        /^ +50%/ {p50=ms($2)} /^ +99%/ {p99=ms($2)} /Requests\/sec/ {rps=$2} /Non-2xx/ {bad=$NF}
        /requests in/ {n=$1}
        END {printf "{\"sent\":%d,\"non2xx\":%d,\"req_per_s\":%s,\"p50_ms\":%s,\"p99_ms\":%s}\n", n, bad, rps, p50, p99}')
      [ -n "$ppid" ] && wait "$ppid"
    else
      res=$("$LR" gen -url "$URL" -rate $rate -c $conc -duration "$DUR" -body "$OUT/$body.json" -header "$auth" -ids "$OUT/ids.gen")
    fi
    read -r rss cpu < <(stop)
    if [ "$v" != http ]; then # the HTTP ceiling queues nothing
      chk=$("$LR" check -redis "127.0.0.1:$RPORT" -queue miitel "$OUT"/ids.* 2>&1 | tail -1)
    fi
  fi
  # Redis's CPU over the run (the check's reads included): the script a variant runs costs
  # Redis time, which shares the machine's cores with the server.
  rcpu=$(awk -v a="$rcpu0" -v b="$(cpu_of "$RPID")" 'BEGIN {printf "%.2f", b-a}')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sc" "$v" "$round" "$rss" "$res" "$chk" "$cpu" "$rcpu"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r), $(redis-server --version | cut -d' ' -f3), wrk $(wrk -v 2>&1 | head -1 | cut -d' ' -f2), $(go version | cut -d' ' -f3) DUR=$DUR ROUNDS=$ROUNDS"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf 'scenario\tvariant\tround\tpeak_rss_mb\tresult\tcheck\tcpu_s\tredis_cpu_s\n'
for sc in $SCENARIOS; do
  for round in $(seq 1 "$ROUNDS"); do
    for v in $VARIANTS; do
      one_run "$sc" "$v" "$round"
    done
  done
done | tee "$OUT/results.tsv"
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
# cpu_us_per_req: the server's CPU time over the requests it answered, the figure that
# depends least on what else the machine runs (the floor has no server process: "-").
echo "# medians (scenario variant req/s p50 p99 peak_rss_mb cpu_us_per_req redis_cpu_us_per_req):"
awk -F'\t' '$1 != "scenario" && $1 !~ /^#/ {
    k=$1" "$2; match($5, /"req_per_s":[0-9.]+/); r=substr($5, RSTART+12, RLENGTH-12)
    match($5, /"p50_ms":[0-9.]+/); p5=substr($5, RSTART+9, RLENGTH-9)
    match($5, /"p99_ms":[0-9.]+/); p9=substr($5, RSTART+9, RLENGTH-9)
    match($5, /"sent":[0-9]+/); n=substr($5, RSTART+7, RLENGTH-7)
    C[k]=C[k]" "(($7 != "-" && $7 != "" && n > 0) ? sprintf("%.0f", $7*1e6/n) : "-")
    RC[k]=RC[k]" "(($8 != "" && n > 0) ? sprintf("%.0f", $8*1e6/n) : "-")
    R[k]=R[k]" "r; P5[k]=P5[k]" "p5; P9[k]=P9[k]" "p9; M[k]=M[k]" "$4; keys[k]=1 }
  function med(s,   a, n, i, j, t) { n=split(s, a, " "); for (i=1;i<=n;i++) for (j=i+1;j<=n;j++) if (a[j]+0 < a[i]+0) {t=a[i];a[i]=a[j];a[j]=t}; return a[int((n+1)/2)] }
  END { for (k in keys) printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k, med(R[k]), med(P5[k]), med(P9[k]), med(M[k]), med(C[k]), med(RC[k]) }' "$OUT/results.tsv" | sort

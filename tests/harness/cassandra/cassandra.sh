#!/usr/bin/env bash
# Real Apache Cassandra 5.0 single node for hw-picollector tests and the demo.
# No Docker, no Apache download site: the server and its runtime jars come from Maven Central
# (cassandra-all, see pom.xml) and run on the JDK 17 under /usr/lib/jvm.
#
#   cassandra.sh fetch              copy the runtime jars into <state>/lib (cached; no-op when complete)
#   cassandra.sh up [--fresh] [--timeout S]
#                                   start the node (idempotent) and wait for a CQL login
#   cassandra.sh down               SIGTERM, wait 30 s, SIGKILL; no-op when not running
#   cassandra.sh status             exit 0 if running, 1 if not
#   cassandra.sh cqlsh-env          print export lines for clients (host, port, user, CA file)
#
# Environment:
#   HWPC_CASSANDRA_DIR        state dir (default <repo>/build/cassandra): lib/ conf/ data/ logs/ cassandra.pid
#   HWPC_CASSANDRA_JAVA_HOME  JDK to run with (default /usr/lib/jvm/java-17-openjdk-amd64; 11 or 17 only)
#   HWPC_CASSANDRA_PORT       native (CQL) port, default 9042
#   HWPC_CASSANDRA_STORAGE_PORT  internode port, default 7000 (bound on 127.0.0.1 only)
#   HWPC_CASSANDRA_HEAP       heap size, default 1G
#   HWPC_CASSANDRA_TIMEOUT    readiness deadline in seconds for `up`, default 180
#   HWPC_CASSANDRA_MLOCK      1 = let Cassandra mlockall() its memory (what it does as root: the whole
#                             heap becomes resident at once); default 0 drops CAP_IPC_LOCK via setpriv
#   PYTHON                    interpreter with cassandra-driver (default <repo>/.venv/bin/python)
set -euo pipefail

HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$HARNESS_DIR/../../.." && pwd)"
STATE="${HWPC_CASSANDRA_DIR:-$REPO_DIR/build/cassandra}"
JDK="${HWPC_CASSANDRA_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}"
NATIVE_PORT="${HWPC_CASSANDRA_PORT:-9042}"
STORAGE_PORT="${HWPC_CASSANDRA_STORAGE_PORT:-7000}"
HEAP="${HWPC_CASSANDRA_HEAP:-1G}"
TIMEOUT="${HWPC_CASSANDRA_TIMEOUT:-180}"
MLOCK="${HWPC_CASSANDRA_MLOCK:-0}"
PY="${PYTHON:-$REPO_DIR/.venv/bin/python}"
HOST=127.0.0.1

LIB="$STATE/lib"
CONF="$STATE/conf"
DATA="$STATE/data"
LOGS="$STATE/logs"
PIDFILE="$STATE/cassandra.pid"
STAMP="$LIB/.complete"
MIN_JARS=90
STOP_WAIT=30

# Cassandra 5.0 runs on JDK 11 and 17 only; never let a caller's JAVA_HOME (e.g. Temurin 25) leak in.
export JAVA_HOME="$JDK"
JAVA="$JAVA_HOME/bin/java"
KEYTOOL="$JAVA_HOME/bin/keytool"

say() { printf 'cassandra: %s\n' "$*"; }
die() { printf 'cassandra: ERROR: %s\n' "$*" >&2; exit 1; }

cassandra_version() {
  sed -n 's:.*<cassandra.version>\(.*\)</cassandra.version>.*:\1:p' "$HARNESS_DIR/pom.xml"
}

check_jdk() {
  [ -x "$JAVA" ] || die "no java at $JAVA (set HWPC_CASSANDRA_JAVA_HOME to a JDK 17)"
  local v
  v="$("$JAVA" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
  case "$v" in
    11|17) ;;
    *) die "$JAVA is Java $v; Cassandra 5.0 supports only 11 and 17" ;;
  esac
}

# ---------------------------------------------------------------- fetch
pom_sum() { sha256sum "$HARNESS_DIR/pom.xml" | cut -d' ' -f1; }

lib_complete() {
  [ -f "$STAMP" ] || return 1
  [ "$(sed -n 's/^pom=//p' "$STAMP")" = "$(pom_sum)" ] || return 1
  local want have
  want="$(sed -n 's/^jars=//p' "$STAMP")"
  have="$(find "$LIB" -maxdepth 1 -name '*.jar' | wc -l)"
  [ -n "$want" ] && [ "$have" -eq "$want" ] && [ "$have" -ge "$MIN_JARS" ] || return 1
  [ -f "$LIB/cassandra-all-$(cassandra_version).jar" ]
}

cmd_fetch() {
  if lib_complete; then
    say "jars already complete in $LIB ($(sed -n 's/^jars=//p' "$STAMP") jars); nothing to fetch"
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
  check_jdk
  mkdir -p "$STATE" "$LOGS"
  local tmp="$STATE/lib.tmp" log="$LOGS/fetch.log" n ver
  ver="$(cassandra_version)"
  rm -rf "$tmp"
  say "fetching cassandra-all $ver and its runtime dependencies (Maven Central, cached in ~/.m2) ..."
  if ! mvn -B -f "$HARNESS_DIR/pom.xml" \
      org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    die "mvn copy-dependencies failed (full log: $log)"
  fi
  n="$(find "$tmp" -maxdepth 1 -name '*.jar' | wc -l)"
  [ "$n" -ge "$MIN_JARS" ] || die "only $n jars copied (expected >= $MIN_JARS); see $log"
  [ -f "$tmp/cassandra-all-$ver.jar" ] || die "cassandra-all-$ver.jar missing from the copy; see $log"
  rm -rf "$LIB"
  mv "$tmp" "$LIB"
  printf 'version=%s\npom=%s\njars=%s\n' "$ver" "$(pom_sum)" "$n" >"$STAMP"
  say "copied $n jars to $LIB (downloads this run: $(grep -c 'Downloaded from' "$log" || true))"
}

# ---------------------------------------------------------------- process helpers
# PID of our node if it is running, else empty.  Trusts the pid file only when that process
# is a CassandraDaemon started with this state dir's config; also adopts an orphan without one.
node_pid() {
  local pid="" cmd
  if [ -f "$PIDFILE" ]; then
    pid="$(tr -dc '0-9' <"$PIDFILE")"
    if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ]; then
      cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
      case "$cmd" in
        *CassandraDaemon*"$CONF/cassandra.yaml"*|*"$CONF/cassandra.yaml"*CassandraDaemon*)
          [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] && { echo "$pid"; return 0; } ;;
      esac
    fi
  fi
  pid="$(pgrep -f -- "-Dcassandra.config=file://$CONF/cassandra.yaml" | head -n 1 || true)"
  if [ -n "$pid" ]; then echo "$pid" >"$PIDFILE"; echo "$pid"; fi
}

port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

stop_pid() {
  local pid="$1" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < STOP_WAIT * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  say "pid $pid still alive after ${STOP_WAIT}s; SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  die "pid $pid survived SIGKILL"
}

cmd_down() {
  local pid stopped=0
  while pid="$(node_pid)"; [ -n "$pid" ]; do
    say "stopping pid $pid (SIGTERM, up to ${STOP_WAIT}s)"
    stop_pid "$pid"
    stopped=1
  done
  rm -f "$PIDFILE"
  if [ "$stopped" = 1 ]; then say "stopped"; else say "not running"; fi
}

cmd_status() {
  local pid
  pid="$(node_pid)"
  if [ -n "$pid" ]; then
    say "running (pid $pid, CQL $HOST:$NATIVE_PORT, state $STATE)"
    return 0
  fi
  say "not running (state $STATE)"
  return 1
}

# ---------------------------------------------------------------- conf
write_conf() {
  mkdir -p "$CONF" "$CONF/triggers" "$DATA" "$LOGS"
  local esc
  esc="$(printf '%s' "$STATE" | sed 's/[&|\\]/\\&/g')"
  sed -e "s|@STATE@|$esc|g" -e "s|@NATIVE_PORT@|$NATIVE_PORT|g" -e "s|@STORAGE_PORT@|$STORAGE_PORT|g" \
    "$HARNESS_DIR/cassandra.yaml.in" >"$CONF/cassandra.yaml"
  { printf -- '-Xms%s\n-Xmx%s\n' "$HEAP" "$HEAP"; cat "$HARNESS_DIR/jvm17.args"; } >"$CONF/jvm17.args"
  cp "$HARNESS_DIR/logback.xml" "$CONF/logback.xml"
  if [ ! -f "$CONF/keystore.p12" ]; then
    rm -f "$CONF/node.pem"
    "$KEYTOOL" -genkeypair -alias node -keyalg RSA -keysize 2048 -validity 3650 \
      -dname "CN=127.0.0.1, OU=hwpc-test, O=hw-picollector" \
      -ext "SAN=IP:127.0.0.1,DNS:localhost" \
      -keystore "$CONF/keystore.p12" -storetype PKCS12 -storepass cassandra -keypass cassandra \
      >/dev/null 2>&1 || die "keytool -genkeypair failed"
  fi
  if [ ! -f "$CONF/node.pem" ]; then
    "$KEYTOOL" -exportcert -rfc -alias node -keystore "$CONF/keystore.p12" -storetype PKCS12 \
      -storepass cassandra -file "$CONF/node.pem" >/dev/null 2>&1 || die "keytool -exportcert failed"
  fi
}

# ---------------------------------------------------------------- up
cmd_up() {
  local fresh=0 timeout="$TIMEOUT" pid t0
  t0="$(date +%s.%N)"
  while [ $# -gt 0 ]; do
    case "$1" in
      --fresh) fresh=1 ;;
      --timeout) shift; timeout="${1:?--timeout needs seconds}" ;;
      --timeout=*) timeout="${1#*=}" ;;
      *) die "up: unknown option $1" ;;
    esac
    shift
  done

  pid="$(node_pid)"
  if [ -n "$pid" ]; then
    if [ "$fresh" = 0 ]; then
      say "already up (pid $pid, CQL $HOST:$NATIVE_PORT)"
      return 0
    fi
    say "--fresh: restarting the running node (pid $pid) with a wiped data dir"
    cmd_down
  fi

  check_jdk
  cmd_fetch
  for p in "$NATIVE_PORT" "$STORAGE_PORT"; do
    port_busy "$p" && die "$HOST:$p is already in use by another process"
  done
  [ -x "$PY" ] || die "no python at $PY (set PYTHON to an interpreter with cassandra-driver)"
  "$PY" -c 'import cassandra' 2>/dev/null || die "$PY lacks cassandra-driver"

  if [ "$fresh" = 1 ]; then
    say "--fresh: wiping $DATA"
    rm -rf "$DATA"
  fi
  write_conf
  [ -f "$LOGS/system.log" ] && mv -f "$LOGS/system.log" "$LOGS/system.log.prev"
  [ -f "$LOGS/stdout.log" ] && mv -f "$LOGS/stdout.log" "$LOGS/stdout.log.prev"

  local jamm start
  jamm="$(ls "$LIB"/jamm-*.jar | head -n 1)"
  # As root, CAP_IPC_LOCK lets Cassandra's startup mlockall() succeed: that faults in the whole
  # 1G heap (~4 s on this box) and pins RSS at ~1.5G.  A test node needs neither, so by default
  # drop the capability; mlockall then fails against the memlock rlimit and Cassandra only warns.
  local -a pre=()
  if [ "$MLOCK" != 1 ] && [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
    pre=(setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock)
  fi
  start="$(date +%s.%N)"
  # setsid: own session, so the node survives the calling shell and a Ctrl-C there.
  # The inner bash writes its own PID and then execs java, so the PID file is the JVM's.
  (
    cd "$STATE"
    exec setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
      ${pre[@]+"${pre[@]}"} "$JAVA" @"$CONF/jvm17.args" \
      -javaagent:"$jamm" \
      -Dcassandra.config="file://$CONF/cassandra.yaml" \
      -Dcassandra.storagedir="$DATA" \
      -Dcassandra.logdir="$LOGS" \
      -Dcassandra.triggers_dir="$CONF/triggers" \
      -Dlogback.configurationFile="$CONF/logback.xml" \
      -Dcassandra-foreground=yes \
      -Dcassandra.skip_wait_for_gossip_to_settle=0 \
      -Dcassandra.ring_delay_ms=1000 \
      -Dcassandra.superuser_setup_delay_ms=0 \
      -Dcassandra.unsafesystem=true \
      -Dcassandra.auth_bcrypt_gensalt_log2_rounds=4 \
      -cp "$LIB/*" org.apache.cassandra.service.CassandraDaemon
  ) </dev/null >>"$LOGS/stdout.log" 2>&1 &
  local i
  for ((i = 0; i < 50; i++)); do [ -s "$PIDFILE" ] && break; sleep 0.1; done
  pid="$(tr -dc '0-9' <"$PIDFILE" 2>/dev/null || true)"
  [ -n "$pid" ] || die "JVM did not start; see $LOGS/stdout.log"
  say "started pid $pid; waiting up to ${timeout}s for a CQL login (logs: $LOGS/system.log)"

  if "$PY" "$HARNESS_DIR/cqlready.py" --host "$HOST" --port "$NATIVE_PORT" --timeout "$timeout" --pid "$pid"; then
    local now; now="$(date +%s.%N)"
    say "up in $(awk -v s="$start" -v e="$now" 'BEGIN{printf "%.1f", e-s}') s from JVM launch to CQL login ($(awk -v s="$t0" -v e="$now" 'BEGIN{printf "%.1f", e-s}') s for the whole command); pid $pid, CQL $HOST:$NATIVE_PORT plaintext+TLS, CA $CONF/node.pem"
    return 0
  fi
  echo "----- last 40 lines of $LOGS/system.log -----" >&2
  tail -n 40 "$LOGS/system.log" | cut -c1-400 >&2 || true   # (config/classpath lines are huge)
  echo "----- last 20 lines of $LOGS/stdout.log -----" >&2
  tail -n 20 "$LOGS/stdout.log" | cut -c1-400 >&2 || true
  if kill -0 "$pid" 2>/dev/null; then stop_pid "$pid"; fi
  rm -f "$PIDFILE"
  die "node did not become ready within ${timeout}s"
}

cmd_cqlsh_env() {
  cat <<EOF
export HWPC_CASSANDRA_HOST=$HOST
export HWPC_CASSANDRA_PORT=$NATIVE_PORT
export HWPC_CASSANDRA_USER=cassandra
export HWPC_CASSANDRA_PASSWORD=cassandra
export HWPC_CASSANDRA_CA=$CONF/node.pem
export SSL_CERTFILE=$CONF/node.pem
EOF
}

usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

case "${1:-}" in
  fetch) shift; cmd_fetch "$@" ;;
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  status) shift; cmd_status "$@" ;;
  cqlsh-env) shift; cmd_cqlsh_env "$@" ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac

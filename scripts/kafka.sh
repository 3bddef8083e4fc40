#!/usr/bin/env bash
# A throwaway Apache Kafka broker on loopback for the analysis-event tests and for trials: one
# KRaft node (broker and controller in one JVM), its jars from Maven Central by package name
# (scripts/kafka/pom.xml, cached in ~/.m2 after the first run), the JDK and Maven of the machine
# (installed from Debian if missing).
#   scripts/kafka.sh start DIR [PORT]  starts it (DIR kept: a second start reuses its data and
#                                      port); says on stderr how to use and stop it, and prints
#                                      on stdout the line scripts/test.sh evals
#   scripts/kafka.sh stop DIR
# The controller listens on PORT+1. Loopback only, no authentication: not for data you keep.
set -euo pipefail
cmd=${1:-}; dir=${2:-}
if [[ ! $cmd =~ ^(start|stop)$ || -z $dir ]]; then
  echo "usage: scripts/kafka.sh start DIR [PORT] | stop DIR  (a throwaway Kafka broker" \
       "on 127.0.0.1 for a trial or the tests)" >&2
  exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)

if [[ $cmd == stop ]]; then
  if [ -f "$dir/pid" ]; then
    pid=$(cat "$dir/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/pid"
    echo "Kafka in $dir stopped" >&2
  fi
  exit 0
fi

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
port=${3:-$(cat "$dir/port" 2>/dev/null || echo 19092)}
if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
  echo "kafka.sh: a broker from $dir is already running (pid $(cat "$dir/pid"))" >&2
  exit 1
fi
if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless maven >/dev/null
fi
if [ ! -s "$dir/classpath" ]; then
  mvn -q -B -f "$ROOT/scripts/kafka/pom.xml" dependency:build-classpath \
    -Dmdep.outputFile="$dir/classpath" >"$dir/mvn.log" 2>&1 ||
    { echo "kafka.sh: could not fetch Kafka's jars; log: $dir/mvn.log" >&2; exit 1; }
fi
cp=$(cat "$dir/classpath")
echo "$port" >"$dir/port"
cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$((port + 1))
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$((port + 1))
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
cat >"$dir/log4j2.properties" <<EOF
appender.file.type=File
appender.file.name=file
appender.file.fileName=$dir/server.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
EOF
JAVA_OPTS=(-Xms64m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
           -Dlog4j2.configurationFile="$dir/log4j2.properties")
if [ ! -f "$dir/data/meta.properties" ]; then
  cluster=$(java "${JAVA_OPTS[@]}" -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
  java "${JAVA_OPTS[@]}" -cp "$cp" kafka.tools.StorageTool format -t "$cluster" \
    -c "$dir/server.properties" >"$dir/format.log" 2>&1 ||
    { echo "kafka.sh: formatting the storage failed; log: $dir/format.log" >&2; exit 1; }
fi
: >"$dir/server.log"
nohup java "${JAVA_OPTS[@]}" -cp "$cp" kafka.Kafka "$dir/server.properties" \
  >"$dir/stdout.log" 2>&1 </dev/null &
echo $! >"$dir/pid"
for _ in $(seq 600); do  # up to 60 s; about 5 s on an idle machine
  grep -q "Kafka Server started" "$dir/server.log" 2>/dev/null && break
  kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
  sleep 0.1
done
if ! grep -q "Kafka Server started" "$dir/server.log" 2>/dev/null; then
  echo "kafka.sh: the broker did not start; logs: $dir/server.log, $dir/stdout.log" >&2
  tail -n 5 "$dir/server.log" "$dir/stdout.log" >&2 || true
  bash "$0" stop "$dir"
  exit 1
fi
cat >&2 <<EOF
Apache Kafka (KRaft, one node) is running on 127.0.0.1:$port, data and log in $dir (loopback only, no authentication: for a trial or the tests, not for data you keep)
  a pyscore sink:  PYSCORE_EVENTS='[{"kafka": {"bootstrap": "127.0.0.1:$port"}}]'
  read a topic:    kcat -b 127.0.0.1:$port -t song-analysis -C -e
  stop it:         bash scripts/kafka.sh stop $dir
EOF
echo "export PYSCORE_TEST_KAFKA=127.0.0.1:$port PYSCORE_TEST_KAFKA_DIR=$dir"  # scripts/test.sh evals this line

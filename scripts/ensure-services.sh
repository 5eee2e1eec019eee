#!/usr/bin/env bash
# Makes sure PostgreSQL and RabbitMQ answer at their defaults (127.0.0.1:5432,
# 127.0.0.1:5672). Starts them where they are installed but stopped; says
# exactly what to do where they are missing.
#   --test   also prepares the test vhost `payhub-test` (recreated empty) and
#            drops databases left behind by interrupted test runs.
set -euo pipefail

PG_HOST=${PG_HOST:-127.0.0.1}
test_mode=false
[ "${1:-}" = "--test" ] && test_mode=true

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_for() { # name host port seconds
  for _ in $(seq 1 "$4"); do port_open "$2" "$3" && return 0; sleep 1; done
  return 1
}

missing() {
  cat >&2 <<MSG
$1 is not reachable at $2 and is not installed on this machine.
Start it with Docker:    docker compose up -d rabbitmq postgres
or install it (Debian):  apt-get install -y $3
MSG
  exit 1
}

# PostgreSQL
if ! port_open "$PG_HOST" 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL..."
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    wait_for PostgreSQL "$PG_HOST" 5432 30 || { echo "PostgreSQL did not start" >&2; exit 1; }
  else
    missing PostgreSQL "$PG_HOST:5432" postgresql
  fi
fi
echo "PostgreSQL is up at $PG_HOST:5432"

# RabbitMQ
if ! port_open 127.0.0.1 5672; then
  if command -v rabbitmq-server >/dev/null 2>&1; then
    echo "starting RabbitMQ..."
    rabbitmq-server -detached || true
    wait_for RabbitMQ 127.0.0.1 5672 90 || { echo "RabbitMQ did not start" >&2; exit 1; }
    rabbitmqctl await_startup >/dev/null 2>&1 || true
  else
    missing RabbitMQ 127.0.0.1:5672 rabbitmq-server
  fi
fi
echo "RabbitMQ is up at 127.0.0.1:5672"

if $test_mode; then
  if command -v rabbitmqctl >/dev/null 2>&1; then
    # A fresh, empty vhost per test run: nothing a previous run left behind
    # (an interrupted test keeps its queues) can interfere or pile up.
    rabbitmqctl -q delete_vhost payhub-test >/dev/null 2>&1 || true
    rabbitmqctl -q add_vhost payhub-test >/dev/null
    rabbitmqctl -q set_permissions -p payhub-test guest '.*' '.*' '.*' >/dev/null
    # Tests run side by side, each with its own fifteen quorum queues; a
    # broker started under `ulimit -n 1024` allows only ~900 file handles,
    # which a full run can approach. Raise the broker's own limit (best
    # effort; the OS limit of the running node is not changed).
    rabbitmqctl -q eval 'file_handle_cache:set_limit(4000).' >/dev/null 2>&1 || true
    echo "test vhost payhub-test ready"
  fi
  if command -v psql >/dev/null 2>&1; then
    for db in $(psql -h "$PG_HOST" -U postgres -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'payhub_test_%'" 2>/dev/null); do
      psql -h "$PG_HOST" -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    done
  fi
fi

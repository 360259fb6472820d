#!/usr/bin/env bash
# Runs every test against a real RabbitMQ broker on 127.0.0.1:5672 and
# PostgreSQL on 127.0.0.1:5432 (the shared journal), and the console's
# browser tests in headless Chromium. Makes sure all are there first: starts
# the services if installed but stopped, installs the Debian packages if
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."

broker_up() {
    rabbitmq-diagnostics -q check_port_connectivity >/dev/null 2>&1
}

if ! command -v rabbitmq-server >/dev/null 2>&1; then
    echo "==> RabbitMQ is not installed; installing the Debian package rabbitmq-server"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq rabbitmq-server
fi

if ! broker_up; then
    echo "==> starting RabbitMQ"
    rabbitmq-server -detached || true
    for _ in $(seq 1 60); do
        broker_up && break
        sleep 1
    done
fi
if ! broker_up; then
    # The app may be stopped by an earlier fault-injection run.
    rabbitmqctl start_app >/dev/null 2>&1 || true
    rabbitmqctl await_startup >/dev/null 2>&1 || true
fi
broker_up || { echo "RabbitMQ did not come up on 127.0.0.1:5672" >&2; exit 1; }
echo "==> RabbitMQ is up"
rabbitmq-plugins enable rabbitmq_consistent_hash_exchange >/dev/null 2>&1 || echo "warning: could not enable rabbitmq_consistent_hash_exchange (tests with partitions will fail)" >&2

# PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`) for the
# journal's shared store: started if installed but stopped, installed if
# missing.
pg_up() {
    pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1
}
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "==> PostgreSQL is not installed; installing the Debian package postgresql"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql
fi
if ! pg_up; then
    echo "==> starting PostgreSQL"
    for version in $(ls /etc/postgresql 2>/dev/null); do
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
    for _ in $(seq 1 30); do
        pg_up && break
        sleep 1
    done
fi
pg_up || { echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }
# The tests connect as `postgres` to database `test` without a password.
if ! psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
    echo "==> preparing database test (trust auth on 127.0.0.1)"
    su postgres -c "psql -q -c 'create database test'" >/dev/null 2>&1 || true
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
        grep -q "^host all all 127.0.0.1/32 trust" "$hba" || sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    done
    for version in $(ls /etc/postgresql); do pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true; done
fi
echo "==> PostgreSQL is up"

# Headless Chromium and chromedriver for the console's browser tests
# (tests/it/console.rs), from Debian's packages.
if ! { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }; then
    echo "==> installing the Debian packages chromium and chromium-driver"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver \
        || echo "warning: chromium could not be installed; the console's browser tests will be skipped" >&2
fi

# The cluster tests (tests/it/cluster.rs) start a throwaway 3-node cluster
# of their own with scripts/rabbitmq-cluster.sh (other node names, ports,
# data and cookie than the broker above); it is stopped when the tests end.
trap 'scripts/rabbitmq-cluster.sh stop >/dev/null 2>&1 || true' EXIT

export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
cargo test --all-targets -- --test-threads="${TEST_THREADS:-4}"

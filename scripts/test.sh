#!/usr/bin/env bash
# Runs every test against a real RabbitMQ broker on 127.0.0.1:5672.
# Makes sure the broker is there first: starts it if it is installed but
# stopped, installs the Debian package if it is missing.
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

export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
cargo test --all-targets -- --test-threads="${TEST_THREADS:-4}"

#!/usr/bin/env bash
# Make sure Redis, PostgreSQL, RabbitMQ, ffmpeg, docker-compose and iproute2 are there for the test suite; start or install what is missing.
# Idempotent: does nothing when everything already runs.
set -uo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq >/dev/null || true; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# Redis
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log \
    || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.2; done
fi
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { echo "services: Redis did not start" >&2; exit 1; }

# PostgreSQL
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if ! ls /etc/postgresql >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    apt_install postgresql
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 1 50); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.2; done
fi
pg_isready -h 127.0.0.1 -p 5432 -q || { echo "services: PostgreSQL did not start" >&2; exit 1; }

# RabbitMQ (the `amqp://` broker tests; each test makes its own vhost with rabbitmqctl)
rabbit_up() { rabbitmq-diagnostics -q ping >/dev/null 2>&1; }
if ! rabbit_up; then
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  as_root rabbitmq-server -detached >/dev/null 2>&1 || true
  for _ in $(seq 1 150); do rabbit_up && break; sleep 0.2; done
fi
rabbit_up || { echo "services: RabbitMQ did not start" >&2; exit 1; }

# The deploy tests: docker-compose validates deploy/docker-compose.yml; iproute2 (`ip netns`) and runuser
# build the several-host test. hadolint and kubernetes-validate come from the test extra (pip).
command -v docker-compose >/dev/null || apt_install docker-compose || echo "services: could not install docker-compose" >&2
command -v ip >/dev/null || apt_install iproute2 || echo "services: could not install iproute2" >&2

# ffmpeg makes the .m4b audiobooks (optional for users, exercised by the tests)
command -v ffmpeg >/dev/null || apt_install ffmpeg || echo "services: could not install ffmpeg" >&2
# Debian's chromium drives the dashboard's browser test (Playwright cannot download browsers here)
command -v chromium >/dev/null || apt_install chromium || echo "services: could not install chromium" >&2
echo "services: Redis, PostgreSQL, RabbitMQ up; chromium $(command -v chromium >/dev/null && echo present || echo missing); ffmpeg $(command -v ffmpeg >/dev/null && echo present || echo missing)"

#!/usr/bin/env bash
# Debian packages some tests need: redis-server (tests that stop Redis start their own),
# redis-sentinel (redis+sentinel:// URLs, the two-zone test), haproxy (the two-zone test),
# prometheus (promtool checks /metrics and the exported alert rules; a test runs a real
# Prometheus server), wrk (benchmarks), iproute2 (the two-zone test's network namespaces),
# nats-server (stream tests, with JetStream), chromium (the dashboard's browser test, driven
# by Playwright: never `playwright install`, which downloads a browser of its own). Installs
# only what is missing, and starts the machine's Redis on 127.0.0.1:6379 and NATS with
# JetStream on 127.0.0.1:4222 if nothing answers there. kubectl (kubectl kustomize renders deploy/kubernetes in the tests) is not
# installed here: Debian's kubernetes-client is too old for Kustomize v5, and those tests are
# skipped without it.
set -euo pipefail
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || missing+=(prometheus)
command -v wrk >/dev/null || missing+=(wrk)
command -v nats-server >/dev/null || missing+=(nats-server)
command -v redis-sentinel >/dev/null || missing+=(redis-sentinel)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v ip >/dev/null || missing+=(iproute2)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  mkdir -p /tmp/buttress-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/buttress-redis --logfile /tmp/buttress-redis/redis.log
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
  mkdir -p /tmp/buttress-nats
  nohup nats-server -a 127.0.0.1 -p 4222 -js -sd /tmp/buttress-nats \
    -l /tmp/buttress-nats/nats.log >/dev/null 2>&1 &
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && break; sleep 0.1; done
fi

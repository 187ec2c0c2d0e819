#!/usr/bin/env bash
# The seed's story (docs/story.md), replayed on this machine, one phenomenon after another,
# each on a managed broker of its own. Sizes a 2-core machine holds; the figures it printed
# here are in BENCHMARKS.md.
#   1. the cliff: more and more groups until the latency breaks, and what broke
#   2. the CPU in waves: 27,000 quiet connections and their socket.io pings
#   3. the connections a dead client host leaves behind (needs root: network namespaces)
#   4. the reconnect storm: a load process too busy to answer its servers' pings
# Each step's own flags: examples/seed-sweep.sh, benchmarks/idle_connections.py --help,
# benchmarks/vanished_host.py --help.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "1. the cliff (mqprobe sweep; the HTML report goes to runs/seed-sweep.html)"
examples/seed-sweep.sh

say "2. CPU in waves at 27,000 connections"
.venv/bin/python benchmarks/idle_connections.py --clients 27000 --seconds 60

say "3. the connections a vanished client host leaves behind"
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then
  .venv/bin/python benchmarks/vanished_host.py
else
  echo "skipped: it makes network namespaces, which needs root and iproute2's ip"
fi

say "4. the reconnect storm: a load process too busy to answer pings, then churn"
.venv/bin/mqprobe compare --topologies single-topic --layouts per-node --duration 10 \
  --ping-interval 1 --ping-timeout 1 --inject client-stall=2500ms/4s
.venv/bin/mqprobe compare --topologies single-topic --layouts per-node --inject churn=300/s

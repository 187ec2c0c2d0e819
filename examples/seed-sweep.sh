#!/usr/bin/env bash
# The seed's stress test, scaled to a 2-core machine: a socket.io node pushing group
# messages of tens of KB to groups of many members, with more and more groups.
# (The seed: groups of 1000-3000 members, messages of tens of KB, a cliff at 16-18 groups;
# this 2-core machine crossed the budget at 22-26 groups: README, "The seed's cliff".)
# Three topologies: one topic exchange with a tag per group (the seed's), an exchange per
# group, and python-socketio's own manager as users run it today.
# One node, so the server runs out before the measuring swarm does; add --nodes and
# --swarm-processes (or hosts) to scale it up.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/mqprobe sweep --groups 2,10,18,22,26,30,34,38 --nodes 1 --group-size 100 \
  --size 20000 --rate 4 --duration 4 --topologies single-topic,per-group,socketio-manager \
  --html runs/seed-sweep.html "$@"

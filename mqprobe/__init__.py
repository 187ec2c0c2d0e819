"""mqprobe: where does a group message's delay come from - the MQ, the server, or the last hop?

The package is in wings, each standing on those before it (a module imports from its own
wing or one below, never above; tests/test_layout.py keeps it so):

- the ground floor (mqprobe/*.py): the vocabulary (model, errors), the wire format between
  pieces (protocol) and in a message (stamps), histograms (records), clocks, the timeline's
  events, the result's typed parts (figures, result) each with its shape (shapes), a process's CPU
  (cpu) and held signals (signals);
- watch/: a loop's lag and stalls, where it spends its time, each piece's CPU from outside;
- broker/: RabbitMQ: reach one, run one on loopback, declare a topology, watch its queues;
- embed/: what a user's server imports to carry the trace (Tracer, metrics);
- pieces/: what runs as a process and measures (node, swarm, publisher, agent);
- verdict/: from recorded facts to a verdict, pure;
- run/: one measurement from start to saved result (compare, sweep, trace);
- output/: tables, pictures, the live view;
- cli: parse, call the library, render.
"""

__version__ = "0.1.0"

# the wings in the order they stand on one another ("" is the ground floor)
WINGS = ("", "watch", "broker", "embed", "pieces", "verdict", "run", "output", "cli", "__main__")

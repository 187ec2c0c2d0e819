"""One measurement from start to saved result: what every run does (workload), where its
pieces go (placement), one run's life (one_run) and its result built once (assemble), the
outer loop compare and sweep share (runner), Ctrl-C and SIGTERM (interrupts), and one
message followed through a server (trace)."""

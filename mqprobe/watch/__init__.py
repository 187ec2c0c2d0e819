"""How mqprobe watches a process it runs or is embedded in: its event loop's lag and stalls
and what held it (loop), where a loop spends its time (profile), and the CPU each piece of a
run used, sampled from outside (footprint)."""

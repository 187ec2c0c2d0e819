"""What a person reads: tables (report, trace_report), pictures (pictures) and the live
view of a broker (top)."""

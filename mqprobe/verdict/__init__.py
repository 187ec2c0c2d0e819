"""From recorded facts to a verdict, pure (no broker, no process): each message's wait
charged to what caused it (attribution), the run's and each group's verdict with its
evidence (analysis), and what a comparison concludes across runs (conclusion)."""

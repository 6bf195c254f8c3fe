"""The seed notebook's method: its functions (reference: torch; notebook: numpy/scipy), its
dataset order (dataset) and its per-pair loop (loop); cache_analysis runs its statistics on
an extract cache (tests/seed_analysis.py)."""

"""scripts/gpu-check: extract on CUDA against the seed loop (docs/gpu-check.md)."""

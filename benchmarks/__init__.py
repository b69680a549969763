"""Side-by-side performance benchmarks: jaxdl against a bare jax.jit loop and PyTorch. `python -m benchmarks.run`."""

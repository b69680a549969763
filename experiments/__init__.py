"""Registered experiments: one module each, defining get_config() and build(config)."""

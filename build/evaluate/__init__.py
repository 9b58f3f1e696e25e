"""Every variant measured through the serving runtime: metrics, parity, latency probe, gates, policy."""

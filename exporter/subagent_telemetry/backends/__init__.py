"""Backends: Prometheus (+ multiprocess, Pushgateway, the /metrics server) and OpenTelemetry."""

"""What a running service tells about itself: Prometheus metrics and structured events."""

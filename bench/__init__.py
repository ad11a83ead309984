"""Benchmarks and the soak run; everything here talks to 127.0.0.1 only and stops by itself."""

"""Benchmarks of omo-mailbot against real servers on loopback: ``python -m bench.run``."""

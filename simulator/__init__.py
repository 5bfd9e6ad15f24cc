"""Async CPE fleet simulator: thousands of TR-069 devices (TR-098 and TR-181) in one process.

Entry points: :func:`simulator.cli.main` (``acs sim``), :class:`simulator.fleet.Fleet` for
programs and tests, :class:`simulator.miniacs.MiniAcs` (a scripted ACS for tests/benchmarks).
"""

"""Vulnerability feeds and matching: which CVE each host is exposed to, which live patch closed it.

The part sits beside ``userspace`` and ``kernel`` (it imports only ``bundle``):
the server stores what it computes, the agent only shows it. Everything here is
plain data in, plain data out, so the same code serves one check-in and a
recompute of the whole fleet.

Modules, by what they own:

- ``model``: the records every feed becomes (``Advisory``), what a host runs
  (``HostState``), the statuses and one host's finding per CVE (``Finding``).
- ``versions``: Debian and RPM versions compared as dpkg and rpm compare them.
- ``exports``: one host's findings (or a fleet's) as the documents scanners
  read: OSV, CSAF 2.0 VEX, CycloneDX VEX, OpenVEX, and OVAL definitions that
  ``oscap`` evaluates on the host against the package and the live patch level.
"""

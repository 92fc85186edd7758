"""Vulnerability feeds and matching: which CVE each host is exposed to, which live patch closed it.

The part sits beside ``userspace`` and ``kernel`` (it imports only ``bundle``):
the server stores what it computes, the agent only shows it. Everything here is
plain data in, plain data out, so the same code serves one check-in and a
recompute of the whole fleet.

Modules, by what they own:

- ``model``: the records every feed becomes (``Advisory``), what a host runs
  (``HostState``), the statuses and one host's finding per CVE (``Finding``).
- ``versions``: Debian and RPM versions compared as dpkg and rpm compare them.
- ``index``: every feed's advisories merged into one verdict per release, source
  and CVE (feed precedence), fixed versions ranked per source, and the cached
  exposure of each installed source version.
- ``levels``: published live patch levels by target, which level first closes
  each CVE (levels are cumulative).
- ``packages``: the package part of a host's findings, once per distinct
  package list (sources at their oldest installed version, the newest kernel
  image), and the list's digest.
- ``running``: what the running kernel and mapped libraries change in a source's
  findings (fixed by live patch, partly fixed, restart needed, bundle
  available), planned once per shape of what runs; effective versions.
- ``matching``: one host's assessment (``Matcher``, ``HostAssessment``):
  findings listed or counted, effective versions.
- ``counts``: findings counted per status and urgency, added and subtracted.
- ``fleet``: the whole fleet recomputed, one host updated at check-in, what
  changed (counts to add to the fleet's, findings).
"""

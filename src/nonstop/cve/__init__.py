"""Vulnerability feeds and matching: which CVE each host is exposed to, which live patch closed it.

The part sits beside ``userspace`` and ``kernel`` (it imports only ``bundle``):
the server stores what it computes, the agent only shows it. Everything here is
plain data in, plain data out, so the same code serves one check-in and a
recompute of the whole fleet.

Modules, by what they own:

- ``model``: the records every feed becomes (``Advisory``), what a host runs
  (``HostState``), the statuses and one host's finding per CVE (``Finding``).
- ``versions``: Debian and RPM versions compared as dpkg and rpm compare them.
- ``package_lists``: a host's installed-package list in the one canonical form the
  agent and the server hash (the check-in sends the list only when its digest is new).
- ``ids``: CVE ids, strict, and the ids free text names (the Debian builder reads them too).
- ``errors``: ``FeedError``, a feed refused whole in one line (feed, place, problem).
- ``batch``: ``FeedBatch``, what reading one feed gives (advisories, counts, skips and
  why), the tracker's urgency words, and how two words on one CVE merge.
- ``tracker``: the Debian security tracker's JSON.
- ``osv``: OSV records of Debian (DSA, DLA, DEBIAN-CVE): one, a list, or a zip.
- ``feeds``: any feed file or body, its format told by its content.
- ``changelogs``: the CVEs newer ``debian/changelog`` entries fix, and the changelog
  taken out of the archive's ``.deb``.
- ``bundles``: published bundles as cumulative live patch levels, and as the feed of the
  update fixes they carry.
- ``sync``: a feed's conditional, bounded download.
- ``exports``: one host's findings (or a fleet's) as the documents scanners
  read: OSV, CSAF 2.0 VEX, CycloneDX VEX, OpenVEX, and OVAL definitions that
  ``oscap`` evaluates on the host against the package and the live patch level.
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

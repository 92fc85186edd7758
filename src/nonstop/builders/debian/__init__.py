"""`nonstop build debian`: from two Debian versions of a source package to per-CVE live patches.

What exists now is the first step, the plan: ``apt`` (deb-src entries and the
versions the archive serves), ``sources`` (source packages at exact versions,
fetched through apt into a cache dir), ``changelog`` (the entries between two
versions, with their CVE ids and closed bugs), ``patches`` (the
``debian/patches`` series difference, the CVE ids each patch names, the files
it touches and whether they are library code), ``changes`` (the per-CVE plan
and its notes on everything it cannot map without guessing) and ``command``
(the command line and the plan's text and JSON forms). Building the levels is
the next step (docs/debian-updates.md).
"""

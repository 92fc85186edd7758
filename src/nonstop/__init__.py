"""nonstop: live patching for Linux fleets.

Data flows one way: build -> bundle -> server -> agent -> engine. Each step is
a sub-package; see docs/architecture.md.
"""

__version__ = "0.1.0"

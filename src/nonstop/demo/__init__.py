"""`nonstop demo`: the end-to-end story of the service, on this machine's embedded defaults.

``story`` runs it (vendor build, patch server, agent, daemon); ``files/`` holds
the C sources of its vulnerable library and service and the library's fixes.
"""

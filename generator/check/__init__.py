"""Layer 4, check: rendered manifests against schemas, admission rules, policies and the app-of-apps graph.

Checks read :class:`~generator.check.manifest.Manifest` objects and return problems; they write nothing.
"""

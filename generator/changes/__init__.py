"""Layer 6, changes: the one model-change core every verb uses.

:mod:`~generator.changes.edit` edits a spec (round-trip YAML), :mod:`~generator.changes.prepare` loads,
renders, validates and plans it, :mod:`~generator.changes.publish` puts it on a branch with a pull request.
"""

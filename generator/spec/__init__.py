"""Layer 1, spec: what the user writes and the rules on it (models, loader, rules, layout, naming, errors, YAML).

Imports nothing from the layers above; every repository path comes from :mod:`generator.spec.layout`.
"""

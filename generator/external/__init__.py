"""Layer 2, external: clients of the systems outside the repository (the git binary, the Git host API, MLflow).

They depend only on :mod:`generator.spec`; the verbs above decide when to call them.
"""

"""Drift detector service: Kafka inference log in, Prometheus metrics out, persisted detectors.

The pure core is importable without the service's I/O dependencies:
:mod:`drift_detector.detector` (fit and score), :mod:`drift_detector.persistence` (safe, hash-checked
artifacts) and :mod:`drift_detector.fit` (the ``python -m drift_detector fit`` subcommand).
"""

"""The drift methods, one module each, behind :mod:`drift_detector.detector`'s ``fit`` and ``FittedDetector``.

``base`` (feature and result types, corrections, config checks), ``ks``, ``chi2``, ``tabular`` (the
offline methods' scoring), ``cvm_online`` (online Cramér-von Mises scoring), ``cvm_thresholds`` (its
fit-time threshold simulation) and ``alibi_adapter`` (the optional alibi-detect backend). Pure: no
I/O, no Kafka, no metrics.
"""

"""Retraining: the Prefect 3 flow ``retrain(model, reason)`` and what it needs (see README.md here).

Modules: :mod:`retrain.flow` (the flow and its tasks), :mod:`retrain.data` (versioned datasets),
:mod:`retrain.models` (one module per model), :mod:`retrain.evaluation` (metrics and the decision),
:mod:`retrain.propose` (clone, generate-model, branch, push, pull request), :mod:`retrain.records` (the
training marker and the proposal artifact in Prefect), :mod:`retrain.settings`.
"""

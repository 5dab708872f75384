"""Layer 7, commands: each CLI verb as a library function (render, validate, generate, promote, rollback,
status); :mod:`generator.cli` is a thin click shell over them.
"""

"""What every service of this repository is built on, copied into each image next to the service.

* :mod:`service_kit.settings`: :class:`~service_kit.settings.ServiceSettings`, the base of every
  service's pydantic-settings ``Settings`` (one env prefix each), loaded one way from the process
  environment or, in tests, from a mapping; :class:`~service_kit.settings.ConfigError`.
* :mod:`service_kit.http`: the ``/healthz``, ``/readyz`` and ``/metrics`` answers every service gives
  (:class:`~service_kit.http.Probes`) and a small asyncio server for them
  (:class:`~service_kit.http.HealthServer`).

Exit codes are each service's own ``ExitCode``, with the same numbers for the same meanings: 0 ok,
1 runtime failure, 2 invalid usage or configuration, 3 an artifact (model, detector) that is missing
or not the pinned one.
"""

from collections.abc import Callable, Sequence


def run_entry_point(argv: Sequence[str], usage: str, main: Callable[[], Callable[[list[str]], int]]) -> int:
    """A service's ``python -m`` entry: ``-h``/``--help`` prints ``usage`` and exits 0, anything else runs
    ``main()(argv)``. ``main`` imports the service only when it runs, so the help needs none of it."""
    if argv and argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    return main()(list(argv))

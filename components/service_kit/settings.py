"""Settings loaded one way: pydantic-settings, one env prefix per service, nothing else reads the environment.

Every service's ``Settings`` subclasses :class:`ServiceSettings` and sets its ``env_prefix``. The
process loads them with ``Settings.load()`` (pydantic-settings' own environment source, reading the
process environment); tests pass the variables the rendered manifests set as a mapping
(``Settings.load(environ)``), which goes through the same source, names, aliases and JSON decoding.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping
from typing import Any, Self

from pydantic import ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

# The mapping a load reads instead of the process environment (None: the process environment).
_ENVIRON: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("service_environ", default=None)


class ConfigError(ValueError):
    """The settings or a configuration file are invalid; the message names the variable or file and why."""


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class ServiceSettings(BaseSettings):
    """Base of every service's settings. Subclasses set ``model_config = SettingsConfigDict(env_prefix=...)``."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The default sources, the environment one reading the mapping :meth:`load` was given."""
        environ = _ENVIRON.get()
        if environ is not None:
            env_settings = _MappingEnvSource(settings_cls, environ)
        return init_settings, env_settings, dotenv_settings, file_secret_settings

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **values: Any) -> Self:
        """The settings from ``environ`` (default: the process environment); ``values`` as for the
        constructor (``_secrets_dir=...``). Raises pydantic's ``ValidationError`` (or pydantic-settings'
        ``SettingsError`` for a value that is not JSON where JSON is expected)."""
        token = _ENVIRON.set(environ)
        try:
            return cls(**values)
        finally:
            _ENVIRON.reset(token)


def problems(exc: ValidationError, variable: Callable[[tuple], str]) -> list[str]:
    """One ``<variable>: <what is wrong>`` per error; ``variable`` names the variable of an error location.
    Values are never echoed (a token may be among them)."""
    return [f"{variable(tuple(error['loc']))}: {error['msg']}" for error in exc.errors(include_input=False)]

"""Errors that say whose fault something is (STYLE.md #6).

- ``SpecError``: the feed definition is wrong; the user must change it. Permanent.
- ``SourceError``: the indicator source failed (unreachable, refused, bad answer). Transient: keep the
  last good rules and retry.
- ``RenderError``: the indicators cannot be turned into rules within the configured bounds (too many shards).
  The user must change a limit or a filter.
- ``RegistryError``: pushing the rules to an OCI registry failed (unreachable, credentials or push refused). The
  registry's tags keep the last good rules; transient unless the reason says the reference or credentials are bad.

Messages never contain secrets: callers pass field paths and values, never auth keys.
"""

from __future__ import annotations


class FalcoMispError(Exception):
    """Base class of every error this package raises on purpose."""


class SpecError(FalcoMispError):
    """A feed spec field is invalid. ``field`` is the dotted path, e.g. ``spec.filters.minThreatLevel``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class SourceError(FalcoMispError):
    """Fetching indicators failed. ``reason`` is a short machine-readable cause (``Timeout``, ``HTTP500``...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class RenderError(FalcoMispError):
    """The indicators do not fit the configured output bounds."""


class RegistryError(FalcoMispError):
    """Pushing rules to an OCI registry failed. ``reason``: ``BadReference``, ``BadCredentials``,
    ``RegistryUnreachable``, ``RegistryAuthFailed``, ``PushRefused`` or ``BadAnswer``. Never holds a credential."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message

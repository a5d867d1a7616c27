"""Falco alerts back to MISP: the intake endpoint (:mod:`.intake`), alert parsing (:mod:`.alerts`), the provenance
index (:mod:`.index`), matching (:mod:`.matching`), MISP payloads (:mod:`.payloads`) and the sender
(:mod:`.sightings`)."""

TOKEN_ENV = "FALCO_MISP_ALERTS_TOKEN"  # noqa: S105 - the environment variable's name, not a token
"""The environment variable holding the alert endpoint's token (``falco-misp run --alerts-port``)."""

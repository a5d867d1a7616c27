"""A feed's rules as a falcoctl ``rulesfile`` OCI artifact: config, layer and manifest bytes (pure, issue 16).

Fleets that span many clusters or plain hosts follow rules with falcoctl (the falcosecurity chart runs it as a
sidecar): falcoctl polls a tag, and when the tag's manifest digest changes it pulls the config (to check the
requirements against the running Falco), then the one layer, a tar.gz it unpacks into the rules folder. What
falcoctl expects, read from its ``pkg/oci`` and ``internal/follower`` (reference/FALCO-OPERATOR.md):

- config media type ``application/vnd.cncf.falco.rulesfile.config.v1+json``, holding falcoctl's
  ``ArtifactConfig``: ``name``, ``version``, ``dependencies`` and ``requirements`` (falcoctl omits empty ones, and
  so do we: our shards depend on no other rules artifact);
- one layer ``application/vnd.cncf.falco.rulesfile.layer.v1+tar.gz`` whose ``org.opencontainers.image.title``
  annotation names the file falcoctl writes it to before unpacking (without it the pull fails);
- ``requirements``: ``engine_version_semver`` ``0.31.0``. falcoctl refuses an artifact whose requirement the
  running Falco does not meet (same major, not older). 0.31.0 is the engine of Falco 0.37, the first Falco whose
  ``/versions`` reports ``engine_version_semver`` and the engine falcosecurity's own stable rules 3.x require; our
  templates use nothing newer (``connect``/``accept`` events, ``fd.sip``/``fd.snet``/``fd.sip.name``,
  ``proc.exepath``, rule ``exceptions`` with the classic comparison operators, flow-sequence lists, no
  ``override``). Measured on Falco 0.44.1 only (reference/FALCO.md).

Version tags. falcoctl lists a repository's tags with ``semver.Parse`` and fails on any tag that is neither
``latest`` nor a semantic version, so the second tag must be semver. It must also be a valid OCI tag (no ``+``,
so no build metadata) and come from the input alone (same rules, same bytes: no clock). Hence
``1.0.0-rules-<first 12 hex digits of the rules sha256>``: ``1.0.0`` is this artifact layout's version, the
pre-release identifier names the exact rules (``rules-`` keeps it alphanumeric: a bare all-digit hex string with a
leading zero is not valid semver). Semver order between two such versions means nothing; follow ``latest`` (or
pin the manifest digest, as the falco-operator's ``Rulesfile`` should), and use the version tag to see which rules
a fleet runs: it matches the ``rules hash`` that ``falco-misp render`` prints.

Stale shards. A falcoctl follower only adds and overwrites files, it never deletes one: a feed that shrinks from 3
shards to 2 would leave the old ``<prefix>-2.yaml`` loaded with its old indicators. So the layer always holds
``falco.maxShards`` files: the shards ``render`` writes, byte for byte, and for every index above them a
placeholder of comments only (a rules file with no rules, as Falco's own ``falco_rules.local.yaml``) that overwrites
whatever an older artifact left under that name. Lowering ``maxShards`` still leaves the files above it on the
followers (docs/delivery.md says to delete them).

Determinism: the layer is a tar (PAX, names sorted, mtime 0, uid/gid 0, empty uname/gname, mode 0644) gzipped with
mtime 0 and no file name; JSON is compact with sorted keys. The same feed and shards give byte-identical config,
layer and manifest within one Python/zlib build (another zlib may compress differently: the pusher therefore decides
"unchanged" from the ``io.falco-misp.rules-sha256`` annotation, not from digests).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zlib
from dataclasses import dataclass
from typing import Any

from falco_misp.feed.model import Feed
from falco_misp.rendering.shards import RulesBundle

CONFIG_MEDIA_TYPE = "application/vnd.cncf.falco.rulesfile.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.cncf.falco.rulesfile.layer.v1+tar.gz"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "rulesfile"  # falcoctl's `allowedTypes` value for these artifacts
ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_VERSION = "org.opencontainers.image.version"
ANNOTATION_RULES_SHA256 = "io.falco-misp.rules-sha256"
ANNOTATION_FEED = "io.falco-misp.feed"
ANNOTATION_SHARDS = "io.falco-misp.shards"
LATEST_TAG = "latest"
LAYOUT_VERSION = "1.0.0"
ENGINE_REQUIREMENT = ("engine_version_semver", "0.31.0")
_FILE_MODE = 0o644


@dataclass(frozen=True)
class Artifact:
    """Everything a registry receives for one feed's rules: three blobs and their digests."""

    config: bytes
    """falcoctl's ArtifactConfig as JSON (media type :data:`CONFIG_MEDIA_TYPE`)."""
    layer: bytes
    """The tar.gz of the shard files (media type :data:`LAYER_MEDIA_TYPE`)."""
    manifest: bytes
    """The OCI image manifest referencing both."""
    config_digest: str
    """``sha256:<hex>`` of :attr:`config`."""
    layer_digest: str
    """``sha256:<hex>`` of :attr:`layer`."""
    manifest_digest: str
    """``sha256:<hex>`` of :attr:`manifest`: what a tag points to, what to pin."""
    rules_sha256: str
    """:attr:`RulesBundle.sha256`, also the manifest's ``io.falco-misp.rules-sha256`` annotation."""
    version: str
    """The config's version and the version tag: ``1.0.0-rules-<12 hex>``."""
    layer_filename: str
    """The layer's title annotation: the file name falcoctl saves the tar.gz under (``<prefix>.tar.gz``)."""


def digest(data: bytes) -> str:
    """The OCI digest of a blob."""
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def artifact_version(rules_sha256: str) -> str:
    """The semver version (and tag) naming these rules; see the module docstring."""
    return f"{LAYOUT_VERSION}-rules-{rules_sha256[:12]}"


def _json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def build_layer(files: dict[str, bytes]) -> bytes:
    """A deterministic tar.gz of ``files`` (flat names): same files, same bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            content = files[name]
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 0
            info.mode = _FILE_MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(content))
    packed = io.BytesIO()
    # filename="" and mtime=0: no name and no time in the gzip header
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


def read_layer(layer: bytes, max_bytes: int, max_files: int = 1024) -> dict[str, bytes]:
    """The files of a rulesfile layer (the inverse of :func:`build_layer`): regular files with flat names only, at
    most ``max_files`` of them and ``max_bytes`` in all (checked from the headers before any content is read, so a
    gzip bomb stops there). :class:`ValueError` for anything else."""
    files: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(layer), mode="r:gz") as tar:
            for member in tar:
                if len(files) >= max_files:
                    raise ValueError(f"more than {max_files} files")
                if not member.isfile() or "/" in member.name or member.name in ("", ".", ".."):
                    raise ValueError(f"{member.name!r} is not a plain file name")
                total += member.size
                if total > max_bytes:
                    raise ValueError(f"more than {max_bytes} bytes unpacked")
                content = tar.extractfile(member)
                assert content is not None, "a regular file has content"
                files[member.name] = content.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:  # gzip's: OSError, EOFError, zlib.error
        raise ValueError(f"not a tar.gz ({type(exc).__name__})") from None
    return files


def build_config(feed: Feed, version: str) -> bytes:
    """falcoctl's ArtifactConfig for the feed's rules."""
    name, required = ENGINE_REQUIREMENT
    return _json(
        {
            "name": feed.config_map_prefix,
            "version": version,
            "requirements": [{"name": name, "version": required}],
        }
    )


def placeholder(feed: Feed, index: int) -> bytes:
    """The rules file of an unused shard index: comments only, so a follower's stale copy loses its rules."""
    return (
        f"# Shard {index} of MISP feed {feed.ref} holds no rules now (falco-misp-operator). This file replaces an\n"
        "# older shard of the same name: a falcoctl follower overwrites files but never deletes one.\n"
    ).encode()


def layer_files(feed: Feed, bundle: RulesBundle) -> dict[str, bytes]:
    """The shard files ``falco-misp render --format files`` writes, same names and bytes, and a
    :func:`placeholder` for every further index below ``falco.maxShards``."""
    files = {s.filename: s.content for s in bundle.shards}
    for index in range(len(bundle.shards), feed.spec.falco.max_shards):
        files[f"{feed.config_map_prefix}-{index}.yaml"] = placeholder(feed, index)
    return files


def build_artifact(feed: Feed, bundle: RulesBundle) -> Artifact:
    """The rulesfile artifact of ``bundle``: :func:`layer_files` in one layer."""
    rules_sha256 = bundle.sha256
    version = artifact_version(rules_sha256)
    layer = build_layer(layer_files(feed, bundle))
    config = build_config(feed, version)
    layer_filename = f"{feed.config_map_prefix}.tar.gz"
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": digest(config), "size": len(config)},
            "layers": [
                {
                    "mediaType": LAYER_MEDIA_TYPE,
                    "digest": digest(layer),
                    "size": len(layer),
                    "annotations": {ANNOTATION_TITLE: layer_filename},
                }
            ],
            "annotations": {
                ANNOTATION_RULES_SHA256: rules_sha256,
                ANNOTATION_FEED: feed.ref,
                ANNOTATION_SHARDS: str(len(bundle.shards)),
                ANNOTATION_VERSION: version,
            },
        }
    )
    return Artifact(
        config=config,
        layer=layer,
        manifest=manifest,
        config_digest=digest(config),
        layer_digest=digest(layer),
        manifest_digest=digest(manifest),
        rules_sha256=rules_sha256,
        version=version,
        layer_filename=layer_filename,
    )

"""The request and response bodies of every API the broker speaks, declared as in Kafka's JSON.

Each declaration follows ``clients/src/main/resources/common/message/<Name>{Request,Response}.json``
(Kafka 4.x) field by field, in wire order, with ``versions`` / ``nullableVersions`` / ``default``
as written there and names in snake_case. Tagged fields (``taggedVersions``) are left out: the
broker skips them when reading and writes none, so none is declared.
"""

from __future__ import annotations

from ..api_keys import SCHEMA_VERSIONS, ApiKey, is_flexible_request
from ..exceptions import UnsupportedVersion
from ..schema import Struct, StructSchema, resolve
from . import admin, data, group_admin, groups

_DECLARED: dict[ApiKey, tuple[Struct, Struct]] = {
    **data.DECLARED,
    **groups.DECLARED,
    **admin.DECLARED,
    **group_admin.DECLARED,
}

# Resolved once at import: (api_key, version) -> schema. A few hundred small objects.
_REQUESTS: dict[tuple[int, int], StructSchema] = {}
_RESPONSES: dict[tuple[int, int], StructSchema] = {}
for _key, (_low, _high) in SCHEMA_VERSIONS.items():
    for _version in range(_low, _high + 1):
        _flexible = is_flexible_request(_key, _version)
        _REQUESTS[_key, _version] = resolve(_DECLARED[_key][0], _version, flexible=_flexible)
        _RESPONSES[_key, _version] = resolve(_DECLARED[_key][1], _version, flexible=_flexible)


def request_schema(api_key: int, version: int) -> StructSchema:
    """The request body schema of one API version; raises ``UnsupportedVersion``."""
    try:
        return _REQUESTS[api_key, version]
    except KeyError:
        raise UnsupportedVersion(api_key, version) from None


def response_schema(api_key: int, version: int) -> StructSchema:
    """The response body schema of one API version; raises ``UnsupportedVersion``."""
    try:
        return _RESPONSES[api_key, version]
    except KeyError:
        raise UnsupportedVersion(api_key, version) from None

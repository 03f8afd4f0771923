"""Optional API keys on HTTP routes: `X-API-Key: KEY` or `Authorization: Bearer KEY`, shown in the OpenAPI docs.

With `api_keys` set, every route that reads or changes what serves takes a key: predictions, model status and
metadata, and `/metrics` (it names the served models, versions and labels) unless `public_metrics` opens it.
`/readyz` stays open for probes that cannot send headers, but names the models only to a caller with a key.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.gateway.core.gateway_core import GatewayCore
from service.gateway.errors import Unauthenticated

API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="one of TLSERVE_API_KEYS")
BEARER = HTTPBearer(auto_error=False, description="one of TLSERVE_API_KEYS as a bearer token")

ApiKey = Annotated[str | None, Security(API_KEY_HEADER)]
Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]


def authenticated_core(request: Request, api_key: ApiKey, bearer: Bearer) -> GatewayCore:
    """The app's core, once the request has shown a valid key (or keys are off); else 401."""
    core: GatewayCore = request.app.state.core
    core.authenticate(api_key or (bearer.credentials if bearer else None))
    return core


def metrics_reader(request: Request, api_key: ApiKey, bearer: Bearer) -> None:
    """401 for /metrics without a valid key, unless keys are off or `public_metrics` is set."""
    if not request.app.state.settings.public_metrics:
        authenticated_core(request, api_key, bearer)


def shows_valid_key(request: Request, api_key: ApiKey, bearer: Bearer) -> bool:
    """Whether the request may see what serves: keys are off, or it shows a valid one (never a 401)."""
    try:
        authenticated_core(request, api_key, bearer)
    except Unauthenticated:
        return False
    return True


AuthenticatedCore = Annotated[GatewayCore, Depends(authenticated_core)]
MetricsReader = Annotated[None, Depends(metrics_reader)]
KeyShown = Annotated[bool, Depends(shows_valid_key)]

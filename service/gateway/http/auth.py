"""Optional API keys on HTTP routes: `X-API-Key: KEY` or `Authorization: Bearer KEY`, shown in the OpenAPI docs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.gateway.core.gateway_core import GatewayCore

API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="one of TLSERVE_API_KEYS")
BEARER = HTTPBearer(auto_error=False, description="one of TLSERVE_API_KEYS as a bearer token")


def authenticated_core(
    request: Request,
    api_key: Annotated[str | None, Security(API_KEY_HEADER)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
) -> GatewayCore:
    """The app's core, once the request has shown a valid key (or keys are off); else 401."""
    core: GatewayCore = request.app.state.core
    core.authenticate(api_key or (bearer.credentials if bearer else None))
    return core


AuthenticatedCore = Annotated[GatewayCore, Depends(authenticated_core)]

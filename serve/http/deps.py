"""The services of the replica serving a request, as a FastAPI dependency. `create_app` is given
the function that finds them: the Serve replica's in the cluster, a test's own under TestClient."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from serve.services import ApiServices


def services_of(request: Request) -> ApiServices:
    services: ApiServices = request.app.state.services_of()
    return services


Services = Annotated[ApiServices, Depends(services_of)]

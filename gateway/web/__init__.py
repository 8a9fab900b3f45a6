"""The site's HTTP surface (aiohttp): /healthz, /metrics, later the REST API and pages."""

from gateway.web.server import (
    REGISTRY_KEY,
    HealthCheck,
    create_app,
    error_response,
    start_http,
    stop_http,
)

__all__ = ["REGISTRY_KEY", "HealthCheck", "create_app", "error_response", "start_http", "stop_http"]

"""The routes of HTTP API v1, by resource. Each is a few lines over a service; the caller comes
from `serve.http.auth` (every router here but `system` requires it)."""

"""HTTP API v1: the app (`app.create_app`), errors, auth, the request guard, media, events and
the routes by resource. It calls only `serve.services`, so it runs under TestClient without Ray."""

"""The client-server API transport (spec: client-server-api): parses HTTP requests, calls the
domain handlers in `homeserver.handlers` and renders their results or `MatrixError`s."""

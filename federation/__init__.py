"""The server-server API transport (spec: server-server-api): inbound routes in `server/`,
outbound requests and the sender queue beside it."""

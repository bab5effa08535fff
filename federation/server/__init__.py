"""Inbound federation: the routes other homeservers call on this one (spec: server-server-api)."""

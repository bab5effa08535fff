"""A Matrix homeserver: spec core, storage, handlers; transports live beside this package."""

"""`python -m homeserver` is the `homeserver` command."""

from homeserver.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

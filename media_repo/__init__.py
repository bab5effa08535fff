"""The content repository transport (spec: client-server-api "Content repository"): uploads,
downloads and thumbnails."""

"""Database storage: view schema, shards, manifests, verification, torch datasets."""

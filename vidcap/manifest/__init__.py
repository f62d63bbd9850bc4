"""Manifests: reading (io), cutting into shards (split), and reducing results (merge, remaining)."""

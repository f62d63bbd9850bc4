"""Sub-commands of the `vidcap` CLI: one module per family, each with `register(subparsers)`."""

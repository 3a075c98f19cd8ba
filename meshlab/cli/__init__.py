"""The `meshlab` command: one module per sub-command, each with `register(subparsers)`."""

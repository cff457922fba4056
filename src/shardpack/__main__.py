"""``python -m shardpack``: the same as the ``shardpack`` command."""

from .cli import main

raise SystemExit(main())

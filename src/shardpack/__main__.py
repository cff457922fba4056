"""``python -m shardpack``: the same as the ``shardpack`` command."""

from .cli.main import main

raise SystemExit(main())

"""``python -m orchestrator`` runs the command line; ``spawn`` (run by every AI worker for each
child job) takes a fast path that skips the full command line's parser and imports."""

import sys

if sys.argv[1:2] == ["spawn"]:
    from .cli.spawn import main as spawn_main

    sys.exit(spawn_main(sys.argv[2:]))

from .cli.main import main  # noqa: E402

sys.exit(main())

"""`emoverse`: run the pipeline or one stage, generate a poem, serve, list the registry.

    parser.py    build_parser: the subcommands and their flags, bounds checked as they parse
    main.py      main: parse, dispatch, and print an EmoverseError as one line (exit code 2)
    pipeline.py  run, ingest, tag, train: the Prefect flows, inputs checked before they start,
                 under the data dir's lock; SIGTERM ends them promptly
    generate.py  generate: the request checked by apps/requests.py, then the poems
    serve.py     serve: the HTTP server (apps/server/)
    registry.py  models: list, promote, roll back, relink the registry
    report.py    report: the family report (and its dial)
    judge.py     judge: the three judges over poems a user gives (no data dir)
    judgements.py  judgements: the judging page's readers; discard one's answers

Input is checked before any flow starts, so bad input costs no server start and prints one
line naming the problem. `main` imports every command module, so the heavy libraries (torch,
MLflow, Prefect: seconds each) are imported inside the commands that use them: `--help`, a bad
flag or `emoverse models` need not wait for the others.
"""

from apps.cli.main import EXIT_BAD_INPUT, EXIT_FAILED, main
from apps.cli.parser import build_parser

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "build_parser", "main"]

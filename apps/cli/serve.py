"""`emoverse serve`: the HTTP server (apps/server/) with the command's batching flags."""

import argparse
from pathlib import Path

from apps.batcher import BatchSettings


def serve(args: argparse.Namespace, data_dir: Path) -> int:
    # torch: see apps/cli/__init__.
    from apps.server import serve as serve_until_interrupted

    batching = BatchSettings(
        window_ms=args.batch_window_ms,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        timeout_s=args.request_timeout,
    )
    serve_until_interrupted(data_dir, host=args.host, port=args.port, batching=batching)
    return 0

"""Glue between Snakemake's `script:` object and the library.

`run(snakemake, job)` gives every script the same behaviour: progress and log
lines go to the rule's log file, torch uses the rule's threads, and a known
error ends the job with one line naming the culprit and a non-zero exit.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable

from .errors import EditPersistError
from .runtime import get_logger, torch_threads


def run(snakemake: Any, job: Callable[[Any], None]) -> None:
    log_file = snakemake.log[0] if len(snakemake.log) else None
    logger = get_logger(log_file)
    real_stderr = sys.stderr
    with contextlib.ExitStack() as stack:
        if log_file:
            # tqdm writes to stderr; sending it to the log keeps progress in the rule's log.
            stream = stack.enter_context(open(log_file, "a", buffering=1))
            stack.enter_context(contextlib.redirect_stderr(stream))
        try:
            with torch_threads(snakemake.threads):
                job(snakemake)
        except EditPersistError as e:
            logger.error(str(e))
            print(f"editpersist: {e}", file=real_stderr)
            sys.exit(1)
        except Exception:
            # Unexpected: keep the traceback in the rule's log, then fail the job as usual.
            logger.exception("job failed")
            raise

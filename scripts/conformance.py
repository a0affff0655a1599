#!/usr/bin/env python3
"""Drop-in proof: run CPython's own executor tests against executor_exporter's classes.

The code is the package ``scripts/conformance/`` beside this file (its docstring says
what is run and how); this is its entry point.  It runs with the interpreter under test
alone (stdlib, executor_exporter, prometheus_client), Python 3.10+.

Usage::

    .venv/bin/python scripts/conformance.py            # thread pool
    .venv/bin/python scripts/conformance.py --all      # thread and process pools
    .venv/bin/python scripts/conformance.py --all --compare   # the stdlib's, then ours
    .venv/bin/python scripts/conformance.py -k ShutdownTest -v

The tests are this Python's own ``test/test_concurrent_futures`` when installed, else
Debian's ``libpython3.X-testsuite`` (``apt-get download``), or ``--testsuite-dir``.

The last line printed is ``conformance: N passed, M failed, K skipped`` (our run's, with
``--compare``); the exit status is non-zero when anything failed.
"""

# Nothing runs at import: spawn and forkserver workers import this file as __mp_main__.
if __name__ == "__main__":
    import sys

    from conformance.cli import main  # the package beside this file (sys.path[0])

    sys.exit(main())

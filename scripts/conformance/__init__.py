"""Drop-in proof: run CPython's own executor tests against executor_exporter's classes.

The tests are CPython's ``test_concurrent_futures`` of the running Python's minor version
(the single file of 3.10/3.11, the package of 3.12+), found as ``sources`` says: the
running interpreter's own installed copy, else Debian's ``libpython3.X-testsuite``
(``apt-get download``, cached under ``.cache/conformance/``, git-ignored), or the
``--testsuite-dir`` given.  They are never copied into the repository.

Every test class of every test module is run (``selection``), with our classes in place
of the stdlib's (``loading``):

* the mixins' ``executor_type`` is set to ``executor_exporter.ThreadPoolExecutor``
  (``ThreadPoolMixin``), ``executor_exporter.ProcessPoolExecutor`` (the fork, spawn
  and forkserver mixins) or, from 3.14, ``executor_exporter.InterpreterPoolExecutor``
  (``InterpreterPoolMixin``, with the thread pool tests by default);
* each module's ``futures`` name (``concurrent.futures``) is replaced by a view that
  returns our classes, for the tests that construct ``futures.ThreadPoolExecutor(...)``
  themselves;
* the tests that start a fresh interpreter (``assert_python_ok('-c', code)``) get
  ``from concurrent.futures import X`` rewritten to ``from executor_exporter import X``.

As in CPython's CI (regrtest ``--fail-env-changed``), a test that changes the environment
(dangling threads or processes, unreaped children, unraisable or thread exceptions) fails
(``envcheck``), and so does every resource-tracker leak report seen on stderr.  After the
tests, a last check fails if any child process is still alive.

``--stdlib`` runs the same selection against the unmodified stdlib classes; ``--compare``
runs both, each in a fresh interpreter, and lists what fails with ours only, with both,
and with the stdlib only (``compare``).
"""

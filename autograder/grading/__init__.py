"""Stage 5, one submission graded in its sandbox: the worker process that lays out a private course root,
runs nbgrader's autograde with the kernel sandboxed, verifies the hidden tests' records against the
reference and writes the feedback (``worker``); nbgrader's preprocessors and the feedback page's exporter
(``preprocessors``, ``mathml``); the summary at the top of each feedback page (``summary``); forbidden shortcuts found in the code (``static_checks``); and the typed
records that cross processes (``records``: ``Spec``, ``CellResult``, ``StudentResult``).

May import ``autograder.sandbox`` and the stages before it.
"""

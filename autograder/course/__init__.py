"""Stage 1, the course as the instructor wrote it: ``solutions/`` (nbgrader source), its graded cells and the
markers around hidden tests (``source``), nbgrader configured for a private course root (``nbgrader``), the
release schedule and what each assignment's exercises depend on (``schedule``, ``dependencies``), cells tagged
illustrative (``cells``) and the reference's timings of test cells (``timings``).

Imports nothing of ``autograder``'s other stages: everything else may import it.
"""

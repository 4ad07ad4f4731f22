"""Stage 7, where a class's results go: the whole way through for one assignment (``grade``), grades.csv and
details.csv (``tables``), the class gradebook (``gradebook``), manual grades folded back in and feedback made
again (``export``), the class report and the similarity report (``report``, ``similarity``), formgrader on
OUT (``formgrader``), Canvas's import CSV (through ``autograder.intake.layouts``) and a Gradescope
autograder (``gradescope``).

May import every stage before it; only ``autograder.cli`` imports it.
"""

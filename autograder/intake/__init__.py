"""Stage 3, submissions as they arrive: a Canvas zip, a Gradescope export, nbgrader's exchange or plain
folders, read and copied into one layout, ``<student>/<notebook>.ipynb`` (``layouts``), and the sample
submissions of the demo and the tests (``samples``). The submissions themselves are only read.

May import ``autograder.course`` and ``autograder.release``.
"""

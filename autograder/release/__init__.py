"""Stage 2, what students receive: the student notebooks nbgrader generates into ``notebooks/``
(``notebooks``), the student bundle with the ``course_lib`` cut at an assignment's release and no hidden
case (``bundle``).

May import ``autograder.course`` only.
"""

"""Stage 2, what students receive: the student notebooks nbgrader generates into ``notebooks/``
(``notebooks``), the student bundle with the ``course_lib`` cut at an assignment's release and no hidden
case (``bundle``), and on a JupyterHub the week's student ``course_lib`` for students' kernels and their
feedback through nbgrader's exchange (``hub``).

May import ``autograder.course`` only.
"""

"""Graded exercises, one module per assignment: each registers its exercises (reference + seeded cases)
with ``course_lib.grading``."""

"""The instructor's tool over nbgrader: build the release, grade a folder of submissions, write grades,
details and feedback that never shows hidden tests. Run ``python -m autograder --help``."""

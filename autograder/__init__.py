"""The course's grader, over nbgrader. Its folders are the stages a grading goes through, in the order the
data travels; a stage imports only the stages above it in this list (``tests/autograder/test_layering.py``
holds it to that, and to no import cycle):

    course/    the course as the instructor wrote it: assignments, graded cells, schedule, timings
    release/   what students receive: the student notebooks and the student course_lib bundle
    intake/    submissions as they arrive: LMS downloads (Canvas, Gradescope, nbgrader's exchange)
    sandbox/   the walls around a student's kernel: bubblewrap or a uid of its own, caps, no network
    grading/   one submission graded in its sandbox: the worker process, nbgrader's preprocessors, records
    batch/     a class's submissions graded: workers in parallel, the cache, a Dask cluster
    outputs/   where results go: CSVs, the gradebook, reports, formgrader, Canvas, Gradescope

``cli.py`` (``python -m autograder``) sits on top of all of them. See ARCHITECTURE.md.
"""

"""nbgrader configuration of the course (read by `nbgrader ...` run from this folder and by `python -m
autograder`, which points the course root at a private temporary folder for each graded submission)."""
import os

c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)
HERE = os.path.dirname(os.path.abspath(__file__))

c.CourseDirectory.course_id = "genai-lecture4"
c.CourseDirectory.root = HERE
c.CourseDirectory.source_directory = "solutions"    # instructor notebooks (with solutions, hidden tests)
c.CourseDirectory.release_directory = "notebooks"   # student release, generated, committed without outputs
# Everything nbgrader writes stays inside the working tree, in a git-ignored folder (never a system path).
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(HERE, ".nbgrader", "gradebook.db")
c.Exchange.root = os.path.join(HERE, ".nbgrader", "exchange")

# Grading.
c.Execute.timeout = 60                       # seconds per cell; a whole-submission budget is the autograder's
c.OverwriteCells.add_missing_cells = True    # a deleted test cell is put back and graded
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# nbgrader's own list, with BudgetedExecute for Execute (python -m autograder turns its budget and sandbox
# on; plain `nbgrader autograde` runs it like Execute), plus StderrAsStdout after execution: a warning printed by a student's code must not
# zero a test cell (nbgrader scores any stderr output as a failure). See autograder/grading/preprocessors.py.
c.Autograde.autograde_preprocessors = [
    "autograder.sandbox.kernel.BudgetedExecute",     # nbgrader's Execute + a whole-submission budget + the sandbox
    "autograder.grading.preprocessors.StderrAsStdout",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]

# Feedback never shows hidden tests: neither their source nor the traceback lines around a failure
# (nbgrader #917, #1363). See autograder/grading/preprocessors.py.
c.GenerateFeedback.preprocessors = [
    "autograder.grading.preprocessors.PendingManualGrades",   # nbgrader's GetGrades + "awaits a grader" (not "Score: 0.0")
    "autograder.grading.preprocessors.FeedbackSummary",       # the summary on top: exercise, points, status, verdict
    "autograder.grading.preprocessors.SanitizeHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
# nbconvert's HTML exporter without its BeautifulSoup round trip over every page (2.4 s each).
c.GenerateFeedback.exporter_class = "autograder.grading.preprocessors.FeedbackExporter"

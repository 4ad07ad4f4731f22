"""What the grading processes' forkserver loads before it forks any (``autograder.batch.warm``): the modules
``autograder.grading.worker`` imports, heaviest first, and the caches that the first feedback page would otherwise
fill in every child (pygments' lexer compiles its regular expressions on first use). Only imports and pure
computation: no thread, no CUDA context, no event loop, no file is opened for writing.

A module that fails to import here is imported again, and fails with its real error, in the child."""
import importlib

MODULES = ["torch", "nbgrader.apps", "nbgrader.preprocessors", "nbgrader.converters", "nbconvert.exporters",
           "jupyter_client", "nbclient", "sqlalchemy", "course_lib.grading", "autograder.grading.worker",
           "autograder.grading.preprocessors", "autograder.sandbox.kernel", "autograder.grading.static_checks", "autograder.course.cells"]

for _name in MODULES:
    try:
        importlib.import_module(_name)
    except Exception:             # noqa: BLE001 (see the docstring)
        pass

try:                              # what a feedback page's code cells go through
    from nbconvert.filters.ansi import ansi2html
    from nbconvert.filters.highlight import Highlight2HTML
    Highlight2HTML(pygments_lexer="ipython3")("import torch\n\ndef f(x):\n    return x @ x.T  # a comment\n")
    ansi2html("\x1b[0;31mValueError\x1b[0m: text")
except Exception:                 # noqa: BLE001
    pass

"""autograder.grading.static_checks: forbidden shortcuts and reference calls found in the submitted code, inside
the exercise's function and the helpers it calls, and nowhere else."""
import nbformat
import pytest

from autograder.grading.static_checks import scan
from course_lib import grading

pytestmark = pytest.mark.autograder


def attention(q, k, v):
    return q


EXERCISES = {
    "attention": grading.Exercise("attention", attention, [], forbidden=(
        "torch.nn.functional.scaled_dot_product_attention", "torch._C._nn.scaled_dot_product_attention")),
    "apply_rope_pairs": grading.exercises()["apply_rope_pairs"],
}


def notebooks(*student_sources: str):
    """(submitted, source): one solution cell per exercise in the source; the submission's cells."""
    source = nbformat.v4.new_notebook()
    for gid in EXERCISES:
        cell = nbformat.v4.new_code_cell(f"def {gid}(*args):\n    raise NotImplementedError()")
        cell.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False, "grade_id": gid,
                                     "schema_version": 3}
        source.cells.append(cell)
    submitted = nbformat.v4.new_notebook()
    for i, text in enumerate(student_sources):
        cell = nbformat.v4.new_code_cell(text)
        if i < len(EXERCISES):
            cell.metadata["nbgrader"] = dict(source.cells[i].metadata["nbgrader"])
        submitted.cells.append(cell)
    return submitted, source


HONEST = "import torch\n\ndef attention(q, k, v):\n    return torch.softmax(q @ k.transpose(-2, -1), -1) @ v"
PAIRS = "def apply_rope_pairs(x, positions, base=10000.0):\n    return x"


@pytest.mark.parametrize("code", [
    "import torch.nn.functional as F\n\ndef attention(q, k, v):\n    return F.scaled_dot_product_attention(q, k, v)",
    "import torch\n\ndef attention(q, k, v):\n    return torch.nn.functional.scaled_dot_product_attention(q, k, v)",
    "from torch.nn.functional import scaled_dot_product_attention as s\n\ndef attention(q, k, v):\n    return s(q, k, v)",
    "import torch.nn.functional as F\n\ndef attention(q, k, v):\n    return getattr(F, 'scaled_dot_product_attention')(q, k, v)",
    "import torch.nn.functional as F\nfast = F.scaled_dot_product_attention\n\ndef attention(q, k, v):\n    return fast(q, k, v)",
    "import torch.nn.functional as F\n\ndef _helper(q, k, v):\n    return F.scaled_dot_product_attention(q, k, v)\n\n"
    "def attention(q, k, v):\n    return _helper(q, k, v)",
])
def test_forbidden_shortcut_is_found(code):
    found = scan(*notebooks(code, PAIRS), EXERCISES)
    assert "attention" in found and "scaled_dot_product_attention" in found["attention"]
    assert "apply_rope_pairs" not in found


def test_honest_code_and_scratch_comparisons_are_fine():
    """Comparing with PyTorch in a cell of one's own is allowed: only the exercise's function counts."""
    scratch = "import torch.nn.functional as F\nprint(F.scaled_dot_product_attention(q, k, v))"
    assert scan(*notebooks(HONEST, PAIRS, scratch), EXERCISES) == {}


@pytest.mark.parametrize("code", [
    "from course_lib.attention.rope import apply_rope_pairs as ref\n\n"
    "def apply_rope_pairs(x, positions, base=10000.0):\n    return ref(x, positions, base)",
    "from course_lib.attention import rope\n\n"
    "def apply_rope_pairs(x, positions, base=10000.0):\n    return rope.apply_rope_pairs(x, positions, base)",
    "def apply_rope_pairs(x, positions, base=10000.0):\n    import course_lib.attention.rope as r\n"
    "    return r.apply_rope_pairs(x, positions, base)",
])
def test_reference_call_is_found(code):
    found = scan(*notebooks(HONEST, code), EXERCISES)
    assert set(found) == {"apply_rope_pairs"} and "reference implementation" in found["apply_rope_pairs"]


def test_cells_that_do_not_parse_are_skipped_and_magics_ignored():
    assert scan(*notebooks("def attention(q, k, v):\n    return return", PAIRS), EXERCISES) == {}
    assert scan(*notebooks("%timeit 1\n" + HONEST, PAIRS), EXERCISES) == {}
    sneaky = "%matplotlib inline\nimport torch.nn.functional as F\n\ndef attention(q, k, v):\n" \
             "    return F.scaled_dot_product_attention(q, k, v)"
    assert set(scan(*notebooks(sneaky, PAIRS), EXERCISES)) == {"attention"}

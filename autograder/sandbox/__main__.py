"""``python -m autograder.sandbox check``: which sandbox tier holds on this machine, and why (one line each);
``python -m autograder.sandbox launch ...``: what ``autograder.sandbox.launch`` does."""
import sys

from autograder.sandbox.kernel import launch, print_check

if sys.argv[1:2] == ["launch"]:
    launch(sys.argv[2:])
elif sys.argv[1:2] == ["check"]:
    sys.exit(print_check())
else:
    print("usage: python -m autograder.sandbox {check|launch ...}", file=sys.stderr)
    sys.exit(2)

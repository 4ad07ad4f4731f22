import sys

from .cli import main

if __name__ == "__main__":      # importable: grading processes (autograder.warm) import the main module again
    sys.exit(main())

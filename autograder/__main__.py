import sys

from autograder.cli import main

if __name__ == "__main__":      # importable: grading processes (autograder.batch.warm) import the main module again
    sys.exit(main())

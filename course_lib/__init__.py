"""Reference implementation of Lecture 4 (pretraining vs fine-tuning, modern Transformers, CNNs).

One module per concept; notebooks import from here. ``course_lib.grading`` is the one entry point that
notebook tests call.
"""
__version__ = "0.1.0"

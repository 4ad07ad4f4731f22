"""Stage 4, the walls around a student's kernel: the kernel manager and nbgrader's Execute that start it
sandboxed and time-bounded (``kernel``), its first process (``launch``, kept light: it starts once per
kernel), memory, process and time caps (``limits``) and the tier that gives each kernel a uid of its own
where bubblewrap cannot run (``uid_tier``). ``python -m autograder.sandbox check`` says what holds here.

May import ``autograder.course`` and the stages before it; nothing here knows about scores.
"""

"""nbgrader configuration of the vitlocal course: ``solutions/`` is the source, ``exercises/`` the release.

Run nbgrader from the repository root, which this file makes the course directory.

    nbgrader generate_assignment "*" --force --no-db    # regenerate exercises/ (what CI checks; never edit it)
    nbgrader generate_assignment "*" --force            # the same, and record the assignments in gradebook.db,
                                                        # which `nbgrader autograde` needs (docs/instructors.md)

Graded cells call the hidden checks in tests/hidden through `vitlocal.check.hidden_tests`; point
``VITLOCAL_HIDDEN_TESTS`` at a private copy to grade with checks the students cannot read.
"""

import os

c = get_config()  # noqa: F821 (traitlets provides get_config when nbgrader loads this file)

c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "vitlocal"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.solution_directory = "nbgrader_solution"  # generate_solution's output; not solutions/ (git-ignored)
# Files never copied into a release or a submission (.hypothesis: hypothesis's cache where a notebook ran).
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".hypothesis"]

# The stub that replaces every ### BEGIN SOLUTION ... ### END SOLUTION region.
STUB = '# YOUR CODE HERE\nraise NotImplementedError("replace this line with your answer")'
c.ClearSolutions.code_stub = {"python": STUB}

# Seconds per cell when grading (autograde, validate). Graded cells stay far below nbgrader's 30 s default;
# the capstone's training cell needs more on a slow machine.
c.Execute.timeout = 300

"""Hidden checks of the classroom assignments (tier 2), one module per assignment.

Each function takes a learner's implementation and raises `AssertionError` with a message a learner
can act on; the hidden-test block of a graded notebook cell only calls one of them, so nbgrader's
feedback shows a function name, not the reference logic:

    ### BEGIN HIDDEN TESTS
    hidden_tests("lattice").check_seq2img(seq2img)
    ### END HIDDEN TESTS

`vitlocal.check.hidden_tests` imports this folder as a package of its own, from ``tests/hidden`` of
the course or from ``$VITLOCAL_HIDDEN_TESTS`` (an instructor's private copy), so keep every import
inside it relative. In this public repository these checks are the back of the book, not a secret.

``wrong/`` holds plausible wrong answers per assignment; ``tests/test_classroom.py`` proves that each
fails at least one hidden check (and, where the mistake is subtle, passes every visible one).
"""

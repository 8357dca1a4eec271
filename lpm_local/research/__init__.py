"""Research: synthetic users, projector training and the evaluation harness."""

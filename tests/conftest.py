"""Settings every test session shares."""

from statemachine import changes

# Every change the machine applies without validating it again (its trusted fields) is also
# validated in full during the tests, and the two configurations must be the same.
changes.VERIFY_TRUSTED = True

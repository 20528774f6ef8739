"""Settings every test session shares."""

from events.service.processor import rows
from statemachine import changes

# Every change the machine applies without validating it again (its trusted fields) is also
# validated in full during the tests, and the two configurations must be the same.
changes.VERIFY_TRUSTED = True

# Every event and applied result serialized from its parts is also dumped from its model, and
# the bytes must be the same.
rows.VERIFY_DUMPS = True

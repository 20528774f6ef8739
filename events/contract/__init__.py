"""The wire contract as documents: AsyncAPI and JSON Schemas, generated from the models.

Imports the client's models and the state machine; never the service or the devtools.
"""

"""The wire contract as documents: AsyncAPI and JSON Schemas, generated from the models.

``asyncapi`` assembles the document and cuts the standalone schemas out of it; its parts come
from ``schemas`` (payloads), ``headers`` (CloudEvents headers) and ``messages`` (one message
object per command, event, result and dead letter). Imports the client's models and the state
machine's vocabulary; never the service or the devtools.
"""

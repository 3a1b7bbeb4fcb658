"""The typed contracts every role speaks: the envelope, one payload model per event type, the codec.

Pure pydantic and the standard library, nothing heavier, so any process can import it cheaply.
"""

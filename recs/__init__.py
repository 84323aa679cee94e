"""The ``recs`` command line, the HTTP reader, the embedded local stack and the demo.

No library package (core/, store/, trainer/, consumers/) imports this one."""

__version__ = "0.1.0"

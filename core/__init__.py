"""The basics every layer shares: the contract's id rules, the domain errors, stop signals,
logging and secret masking, progress reporting and the checked types of option values.
Imports nothing of the project (tests/test_layout.py checks it), so store/, trainer/,
consumers/ and the command line (recs/) can all use it without an import cycle."""

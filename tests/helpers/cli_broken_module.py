"""Imported by tests/project/test_cli.py to check that an import-time error is one clean line."""
raise RuntimeError("this module is broken on purpose")

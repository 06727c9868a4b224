# The pyotp pytest plugin is registered through its `pytest11` entry point when pyotp is
# installed; naming it here as well keeps the suite runnable from a source checkout
# (PYTHONPATH=src), and pytest ignores the second registration of the same name.
pytest_plugins = ["pyotp.testing"]

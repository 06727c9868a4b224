"""MyApp: a port of the reference ``MyApp.Application`` example (an application starting a
supervisor with workers, configured from TOML). See ``application.py`` and
``docs/application.md``. Run it with::

    python -m pyotp run examples.my_app.application:MyApp \\
        --config examples/my_app/config/config.toml --env dev
"""

"""The pytest entry point of logbench: options, markers and fixtures are registered here."""

"""Configuration: the settings model, its sources (environment, TOML, *_FILE secrets), targets."""

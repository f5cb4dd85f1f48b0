"""Configuration: the TOML file schema (`settings`) and logging set-up (`logs`)."""

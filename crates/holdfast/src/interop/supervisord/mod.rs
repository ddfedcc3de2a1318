//! supervisord.conf: import into holdfast TOML and export of `[program:x]` sections.

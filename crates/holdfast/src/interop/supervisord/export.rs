//! A service as a supervisord `[program:x]` section.

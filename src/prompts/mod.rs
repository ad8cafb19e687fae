//! prompts core (see the module docs).

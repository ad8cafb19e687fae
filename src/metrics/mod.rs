//! metrics core (see the module docs).

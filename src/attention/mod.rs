//! Fused global-local attention (see forward.rs / backward.rs).

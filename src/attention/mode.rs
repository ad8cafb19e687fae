//! Which attentions the op runs (the paper's Table 3b ablation).

use crate::{DglError, Result};

/// The attention pattern over the packed sequence `[G ; frame_1 ; ... ; frame_T]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// DGL (DGL-SPEC section 3): frame t's queries attend to `[G ; frame_t]`, the G
    /// queries attend to every token.
    #[default]
    GlobalLocal,
    /// No global video attention: each `[G ; frame_t]` attends within itself; frame
    /// tokens take their frame's result, G takes the mean of its T per-frame results.
    Local,
    /// No local frame attention: every query attends to every token (joint
    /// space-time attention, plain multi-head self-attention over the sequence).
    Global,
}

impl Mode {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "global_local" => Ok(Mode::GlobalLocal),
            "local" => Ok(Mode::Local),
            "global" => Ok(Mode::Global),
            other => Err(DglError::value(
                "mode",
                format!("expected one of 'global_local', 'local', 'global', got {other:?}"),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::GlobalLocal => "global_local",
            Mode::Local => "local",
            Mode::Global => "global",
        }
    }
}

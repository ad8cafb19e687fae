//! The authoritative checks of the attention op's inputs.

use super::{AttentionConfig, Weights};
use crate::{DglError, Result};
use tch::{Kind, Tensor};

/// The sizes of one call, derived from the inputs once they are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub batch: i64,
    /// G: global tokens at the front of the packed sequence.
    pub num_global: i64,
    /// T: frames after them.
    pub frames: i64,
    /// L: tokens per frame.
    pub tokens: i64,
    pub heads: i64,
    pub head_dim: i64,
    /// D = heads * head_dim.
    pub dim: i64,
}

impl Dims {
    pub fn seq(&self) -> i64 {
        self.num_global + self.frames * self.tokens
    }
    pub fn scale(&self) -> f64 {
        1.0 / (self.head_dim as f64).sqrt()
    }
}

pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Float => "float32",
        Kind::Double => "float64",
        Kind::Half => "float16",
        Kind::BFloat16 => "bfloat16",
        Kind::Int64 => "int64",
        Kind::Int => "int32",
        Kind::Bool => "bool",
        Kind::Uint8 => "uint8",
        _ => "another dtype",
    }
}

fn is_float(kind: Kind) -> bool {
    matches!(kind, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16)
}

/// Checks a weight or bias: shape, dtype and device equal to `x`'s.
pub fn check_param(arg: &str, t: &Tensor, shape: &[i64], x: &Tensor) -> Result<()> {
    if t.size() != shape {
        return Err(DglError::shape(arg, format!("{shape:?}"), t.size()));
    }
    if t.kind() != x.kind() {
        return Err(DglError::dtype(
            arg,
            format!("{} (the dtype of `x`)", kind_name(x.kind())),
            kind_name(t.kind()),
        ));
    }
    if t.device() != x.device() {
        return Err(DglError::device(arg, x.device(), t.device()));
    }
    Ok(())
}

/// Checks every input of the op and returns its sizes.
pub fn check_inputs(x: &Tensor, w: &Weights<'_>, cfg: &AttentionConfig) -> Result<Dims> {
    let AttentionConfig { num_heads, num_global, num_frames, .. } = *cfg;
    let size = x.size();
    let &[batch, seq, dim] = size.as_slice() else {
        return Err(DglError::shape("x", "(batch, num_global + num_frames * tokens, dim), 3-D", size));
    };
    if !is_float(x.kind()) {
        return Err(DglError::dtype("x", "float32, float64, float16 or bfloat16", kind_name(x.kind())));
    }
    if batch == 0 {
        return Err(DglError::shape("x", "a batch of at least one video", size));
    }
    if num_heads < 1 {
        return Err(DglError::value("num_heads", format!("must be >= 1, got {num_heads}")));
    }
    if dim % num_heads != 0 || dim == 0 {
        return Err(DglError::value(
            "num_heads",
            format!("the width of `x` ({dim}) must be a positive multiple of num_heads ({num_heads})"),
        ));
    }
    if num_global < 0 {
        return Err(DglError::value("num_global", format!("must be >= 0, got {num_global}")));
    }
    if num_frames < 1 {
        return Err(DglError::value("num_frames", format!("must be >= 1, got {num_frames}")));
    }
    let rest = seq - num_global;
    if rest < num_frames || rest % num_frames != 0 {
        return Err(DglError::shape(
            "x",
            format!(
                "(batch, S, dim) with S = num_global + num_frames * tokens = {num_global} + {num_frames} * L \
                 for some L >= 1"
            ),
            size,
        ));
    }
    check_param("in_proj_weight", w.in_proj_weight, &[3 * dim, dim], x)?;
    if let Some(b) = w.in_proj_bias {
        check_param("in_proj_bias", b, &[3 * dim], x)?;
    }
    check_param("out_proj_weight", w.out_proj_weight, &[dim, dim], x)?;
    if let Some(b) = w.out_proj_bias {
        check_param("out_proj_bias", b, &[dim], x)?;
    }
    Ok(Dims {
        batch,
        num_global,
        frames: num_frames,
        tokens: rest / num_frames,
        heads: num_heads,
        head_dim: dim / num_heads,
        dim,
    })
}

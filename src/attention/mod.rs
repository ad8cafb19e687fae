//! Fused global-local video attention (DGL-SPEC section 3).
//!
//! `x` is the packed video sequence `(batch, G + T*L, dim)`: G global tokens,
//! then T frames of L tokens. With q, k, v from ONE projection of the whole
//! sequence:
//! - local: the L queries of frame t attend to keys/values `[G ; frame_t]`;
//! - global: the G queries attend to every token;
//!
//! and the two results, back in the packed layout, go through one `out_proj`.
//! That is `Mode::GlobalLocal`, DGL itself. The ablations (paper, Table 3b) swap
//! the attentions and keep everything else: `Mode::Local` (each `[G ; frame_t]`
//! attends within itself; G takes the mean of its T per-frame results) and
//! `Mode::Global` (every token attends to every token). See `mode.rs`.
//!
//! The backward is explicit. It takes the q/k/v projection `(batch, seq, 3*dim)`
//! (saved by the forward, or recomputed from `x` with one matmul) and recomputes
//! the attentions from it with the fast kernels (cheap next to the projection),
//! so neither the attention output nor any score matrix is saved. `x` itself is
//! needed only for the gradient of `in_proj_weight`.

pub mod checks;
pub mod mode;
pub mod sdpa;
mod views;

use crate::{DglError, Result};
pub use checks::check_inputs;
use checks::Dims;
pub use mode::Mode;
pub use sdpa::Backend;
use tch::Tensor;
use views::Attention;

/// What the forward returns: the output and the projection the backward reuses.
pub struct ForwardOutput {
    /// `(batch, seq, dim)`: the op's result (after `out_proj`).
    pub out: Tensor,
    /// `(batch, seq, 3 * dim)`: the q/k/v projection of `x`.
    pub qkv: Tensor,
    /// `(batch, heads, G, seq)`: the global queries' attention probabilities, only
    /// from [`attention_forward_with_weights`].
    pub weights: Option<Tensor>,
}

/// Gradients; `None` where not asked for.
#[derive(Default)]
pub struct Gradients {
    pub x: Option<Tensor>,
    pub in_proj_weight: Option<Tensor>,
    pub in_proj_bias: Option<Tensor>,
    pub out_proj_weight: Option<Tensor>,
    pub out_proj_bias: Option<Tensor>,
}

/// Which gradients the backward computes, in argument order.
#[derive(Clone, Copy, Debug, Default)]
pub struct NeedsGrad {
    pub x: bool,
    pub in_proj_weight: bool,
    pub in_proj_bias: bool,
    pub out_proj_weight: bool,
    pub out_proj_bias: bool,
}

/// Everything about one call of the op besides its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionConfig {
    /// H: attention heads; must divide the width of `x`.
    pub num_heads: i64,
    /// G: global tokens at the front of the packed sequence.
    pub num_global: i64,
    /// T: frames after them (each of L tokens, L read from the sequence length).
    pub num_frames: i64,
    pub mode: Mode,
    pub backend: Backend,
}

impl AttentionConfig {
    /// DGL itself (`Mode::GlobalLocal`) on the fastest kernel (`Backend::Auto`).
    pub fn new(num_heads: i64, num_global: i64, num_frames: i64) -> Self {
        AttentionConfig { num_heads, num_global, num_frames, mode: Mode::default(), backend: Backend::default() }
    }

    pub fn with_mode(self, mode: Mode) -> Self {
        AttentionConfig { mode, ..self }
    }

    pub fn with_backend(self, backend: Backend) -> Self {
        AttentionConfig { backend, ..self }
    }
}

/// The op's parameters, laid out as in `torch.nn.MultiheadAttention`: the q/k/v
/// projection `(3 * dim, dim)` (+ `(3 * dim,)`) and `out_proj` `(dim, dim)` (+ `(dim,)`).
#[derive(Clone, Copy)]
pub struct Weights<'a> {
    pub in_proj_weight: &'a Tensor,
    pub in_proj_bias: Option<&'a Tensor>,
    pub out_proj_weight: &'a Tensor,
    /// The backward does not read it (its gradient is a sum of `grad_out`).
    pub out_proj_bias: Option<&'a Tensor>,
}

/// The fused forward. See the module docs for the layout.
pub fn attention_forward(x: &Tensor, w: Weights<'_>, cfg: AttentionConfig) -> Result<ForwardOutput> {
    forward(x, w, cfg, false)
}

/// The fused forward that also returns the global queries' attention probabilities
/// `(batch, heads, G, G + T*L)` (see `views::Attention::global_weights`; for mode
/// `Local`, G's effective weights). Only the G rows are formed: the frame tokens'
/// probabilities stay inside the kernels, and the output is the same as
/// [`attention_forward`]'s.
pub fn attention_forward_with_weights(x: &Tensor, w: Weights<'_>, cfg: AttentionConfig) -> Result<ForwardOutput> {
    forward(x, w, cfg, true)
}

fn forward(x: &Tensor, w: Weights<'_>, cfg: AttentionConfig, need_weights: bool) -> Result<ForwardOutput> {
    let d = check_inputs(x, &w, &cfg)?;
    let backend = cfg.backend.resolve(x.device(), x.kind(), d.head_dim)?;
    let qkv = x.f_linear(w.in_proj_weight, w.in_proj_bias)?;
    let attention = Attention::compute(&qkv, &d, cfg.mode, backend)?;
    let weights = if need_weights {
        Some(attention.global_weights(&d)?)
    } else {
        None
    };
    // The kernels' inputs and lse are dropped before out_proj.
    let attn = attention.packed(&d)?;
    drop(attention);
    let out = attn.f_linear(w.out_proj_weight, w.out_proj_bias)?;
    Ok(ForwardOutput { out, qkv, weights })
}

/// Sum over every dimension but the last: the gradient of a broadcast bias.
fn bias_grad(g: &Tensor) -> Result<Tensor> {
    let n = g.size().len() as i64;
    let dims: Vec<i64> = (0..n - 1).collect();
    Ok(g.f_sum_dim_intlist(dims.as_slice(), false, g.kind())?)
}

/// `g^T @ a` over all leading dimensions: the gradient of a linear layer's weight.
fn weight_grad(g: &Tensor, a: &Tensor) -> Result<Tensor> {
    let (gn, an) = (g.size(), a.size());
    let (go, ai) = (
        gn.last().copied().unwrap_or(1),
        an.last().copied().unwrap_or(1),
    );
    Ok(g.f_reshape([-1, go].as_slice())?
        .f_transpose(0, 1)?
        .f_mm(&a.f_reshape([-1, ai].as_slice())?)?)
}

/// The explicit backward. `qkv` is the forward's projection; when it is `None` it is
/// recomputed from `x`. `x` is needed for the gradient of `in_proj_weight` too.
pub fn attention_backward(
    grad_out: &Tensor,
    x: Option<&Tensor>,
    qkv: Option<&Tensor>,
    w: Weights<'_>,
    cfg: AttentionConfig,
    needs: NeedsGrad,
) -> Result<Gradients> {
    // grad_out has the shape, dtype and device of x.
    let d = check_inputs(grad_out, &w, &cfg)?;
    let qkv = backward_projection(grad_out, x, qkv, &w, needs, &d)?;
    let backend = cfg.backend.resolve(grad_out.device(), grad_out.kind(), d.head_dim)?;
    let mut grads = Gradients::default();
    if needs.out_proj_bias {
        grads.out_proj_bias = Some(bias_grad(grad_out)?);
    }
    let need_attention = needs.x || needs.in_proj_weight || needs.in_proj_bias;
    if !(need_attention || needs.out_proj_weight) {
        return Ok(grads);
    }
    // Recompute the attentions from the projection (no attention output was saved).
    let attention = Attention::compute(&qkv, &d, cfg.mode, backend)?;
    if needs.out_proj_weight {
        grads.out_proj_weight = Some(weight_grad(grad_out, &attention.packed(&d)?)?);
    }
    if need_attention {
        let dqkv = attention.qkv_grad(&grad_out.f_matmul(w.out_proj_weight)?, &d, backend)?;
        projection_grads(&mut grads, &dqkv, x, w.in_proj_weight, needs)?;
    }
    Ok(grads)
}

/// The checked projection the backward works from: the saved `qkv`, or recomputed
/// from `x`. Also checks that `x` is there when `in_proj_weight` needs it.
fn backward_projection(
    grad_out: &Tensor,
    x: Option<&Tensor>,
    qkv: Option<&Tensor>,
    w: &Weights<'_>,
    needs: NeedsGrad,
    d: &Dims,
) -> Result<Tensor> {
    if let Some(x) = x {
        checks::check_param("x", x, &[d.batch, d.seq(), d.dim], grad_out)?;
    }
    let qkv = match (qkv, x) {
        (Some(qkv), _) => {
            checks::check_param("qkv", qkv, &[d.batch, d.seq(), 3 * d.dim], grad_out)?;
            qkv.shallow_clone()
        }
        (None, Some(x)) => x.f_linear(w.in_proj_weight, w.in_proj_bias)?,
        (None, None) => {
            return Err(DglError::value(
                "qkv",
                "give the saved projection `qkv` or the input `x`",
            ))
        }
    };
    if needs.in_proj_weight && x.is_none() {
        return Err(DglError::value(
            "x",
            "the gradient of `in_proj_weight` needs the input `x`",
        ));
    }
    Ok(qkv)
}

/// The gradients of `x`, `in_proj_weight` and `in_proj_bias` from that of the projection.
fn projection_grads(
    grads: &mut Gradients,
    dqkv: &Tensor,
    x: Option<&Tensor>,
    in_proj_weight: &Tensor,
    needs: NeedsGrad,
) -> Result<()> {
    if needs.x {
        grads.x = Some(dqkv.f_matmul(in_proj_weight)?);
    }
    if let (true, Some(x)) = (needs.in_proj_weight, x) {
        grads.in_proj_weight = Some(weight_grad(dqkv, x)?);
    }
    if needs.in_proj_bias {
        grads.in_proj_bias = Some(bias_grad(dqkv)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests;

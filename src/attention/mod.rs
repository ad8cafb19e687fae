//! Fused global-local video attention (DGL-SPEC section 3).
//!
//! `x` is the packed video sequence `(batch, G + T*L, dim)`: G global tokens,
//! then T frames of L tokens. With q, k, v from ONE projection of the whole
//! sequence:
//! - local: the L queries of frame t attend to keys/values `[G ; frame_t]`;
//! - global: the G queries attend to every token;
//!
//! and the two results, back in the packed layout, go through one `out_proj`.
//!
//! The backward is explicit. It takes the q/k/v projection `(batch, seq, 3*dim)`
//! (saved by the forward, or recomputed from `x` with one matmul) and recomputes
//! the two attentions from it with the fast kernels (cheap next to the projection),
//! so neither the attention output nor any score matrix is saved. `x` itself is
//! needed only for the gradient of `in_proj_weight`.

pub mod checks;
pub mod sdpa;

use crate::Result;
use checks::Dims;
pub use checks::check_inputs;
pub use sdpa::Backend;
use tch::Tensor;

/// What the forward returns: the output and the projection the backward reuses.
pub struct ForwardOutput {
    /// `(batch, seq, dim)`: the op's result (after `out_proj`).
    pub out: Tensor,
    /// `(batch, seq, 3 * dim)`: the q/k/v projection of `x`.
    pub qkv: Tensor,
}

/// Gradients; `None` where not asked for.
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

/// The q, k, v views of one projection, in the layouts the kernels take.
struct Views {
    /// Local attention: `(batch*frames, heads, tokens, head_dim)`.
    q_loc: Tensor,
    /// Local keys/values `[G ; frame]`: `(batch*frames, heads, G + tokens, head_dim)`.
    k_loc: Tensor,
    v_loc: Tensor,
    /// Global attention (G > 0): `(batch, heads, G, head_dim)` and `(batch, heads, seq, head_dim)`.
    global: Option<(Tensor, Tensor, Tensor)>,
}

/// `(batch, tokens, dim)` <-> `(batch, heads, tokens, head_dim)` for the frame part.
fn frames_to_heads(t: &Tensor, d: &Dims) -> Result<Tensor> {
    Ok(t
        .f_narrow(1, d.num_global, d.frames * d.tokens)?
        .f_reshape([d.batch * d.frames, d.tokens, d.heads, d.head_dim].as_slice())?
        .f_transpose(1, 2)?)
}

fn globals_to_heads(t: &Tensor, d: &Dims) -> Result<Tensor> {
    Ok(t.f_narrow(1, 0, d.num_global)?.f_reshape([d.batch, d.num_global, d.heads, d.head_dim].as_slice())?.f_transpose(1, 2)?)
}

/// Local keys or values: G repeated for every frame, then the frame's own tokens.
fn local_keys(k: &Tensor, d: &Dims) -> Result<Tensor> {
    let frames = k.f_narrow(1, d.num_global, d.frames * d.tokens)?;
    let kv = if d.num_global == 0 {
        frames.f_reshape([d.batch * d.frames, d.tokens, d.heads, d.head_dim].as_slice())?
    } else {
        let g = k.f_narrow(1, 0, d.num_global)?.f_unsqueeze(1)?.f_expand(
            [d.batch, d.frames, d.num_global, d.heads, d.head_dim].as_slice(),
            false,
        )?;
        let f = frames.f_reshape([d.batch, d.frames, d.tokens, d.heads, d.head_dim].as_slice())?;
        Tensor::f_cat(&[g, f], 2)?.f_reshape(
            [d.batch * d.frames, d.num_global + d.tokens, d.heads, d.head_dim].as_slice(),
        )?
    };
    Ok(kv.f_transpose(1, 2)?)
}

/// The views both attentions read from one projection `(batch, seq, 3 * dim)`.
fn views(qkv: &Tensor, d: &Dims) -> Result<Views> {
    let qkv = qkv.f_view([d.batch, d.seq(), 3, d.heads, d.head_dim].as_slice())?;
    let (q, k, v) = (qkv.f_select(2, 0)?, qkv.f_select(2, 1)?, qkv.f_select(2, 2)?);
    let global = if d.num_global > 0 {
        let q_g = q.f_narrow(1, 0, d.num_global)?.f_transpose(1, 2)?;
        Some((q_g, k.f_transpose(1, 2)?, v.f_transpose(1, 2)?))
    } else {
        None
    };
    let q_loc = q.f_narrow(1, d.num_global, d.frames * d.tokens)?.f_reshape(
        [d.batch * d.frames, d.tokens, d.heads, d.head_dim].as_slice(),
    )?;
    Ok(Views { q_loc: q_loc.f_transpose(1, 2)?, k_loc: local_keys(&k, d)?, v_loc: local_keys(&v, d)?, global })
}

/// Both attentions: `((out_local, lse_local), Some((out_global, lse_global)))`, heads layout.
type Attended = ((Tensor, Tensor), Option<(Tensor, Tensor)>);

fn attend(v: &Views, d: &Dims, backend: Backend) -> Result<Attended> {
    let local = sdpa::sdpa_forward(&v.q_loc, &v.k_loc, &v.v_loc, d.scale(), backend)?;
    let global = match &v.global {
        Some((q_g, k_all, v_all)) => Some(sdpa::sdpa_forward(q_g, k_all, v_all, d.scale(), backend)?),
        None => None,
    };
    Ok((local, global))
}

/// The attention result in the packed token layout `(batch, seq, dim)`.
fn packed(o_loc: &Tensor, o_g: Option<&Tensor>, d: &Dims) -> Result<Tensor> {
    let o_loc = heads_to_tokens(o_loc, d.batch, d)?;
    match o_g {
        Some(o_g) => Ok(Tensor::f_cat(&[heads_to_tokens(o_g, d.batch, d)?, o_loc], 1)?),
        None => Ok(o_loc),
    }
}

/// Back from `(batch*, heads, tokens, head_dim)` to `(batch, tokens', dim)`.
fn heads_to_tokens(t: &Tensor, batch: i64, d: &Dims) -> Result<Tensor> {
    Ok(t.f_transpose(1, 2)?.f_reshape([batch, -1, d.dim].as_slice())?)
}

/// The fused forward. See the module docs for the layout.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    x: &Tensor,
    in_proj_weight: &Tensor,
    in_proj_bias: Option<&Tensor>,
    out_proj_weight: &Tensor,
    out_proj_bias: Option<&Tensor>,
    num_heads: i64,
    num_global: i64,
    num_frames: i64,
    backend: Backend,
) -> Result<ForwardOutput> {
    let d = check_inputs(x, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads, num_global, num_frames)?;
    let backend = backend.resolve(x.device(), x.kind(), d.head_dim)?;
    let qkv = x.f_linear(in_proj_weight, in_proj_bias)?;
    let ((o_loc, _), global) = attend(&views(&qkv, &d)?, &d, backend)?;
    let attn = packed(&o_loc, global.as_ref().map(|g| &g.0), &d)?;
    let out = attn.f_linear(out_proj_weight, out_proj_bias)?;
    Ok(ForwardOutput { out, qkv })
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
    let (go, ai) = (gn.last().copied().unwrap_or(1), an.last().copied().unwrap_or(1));
    Ok(g.f_reshape([-1, go].as_slice())?.f_transpose(0, 1)?.f_mm(&a.f_reshape([-1, ai].as_slice())?)?)
}

/// The explicit backward. `qkv` is the forward's projection; when it is `None` it is
/// recomputed from `x`. `x` is needed for the gradient of `in_proj_weight` too.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    grad_out: &Tensor,
    x: Option<&Tensor>,
    qkv: Option<&Tensor>,
    in_proj_weight: &Tensor,
    in_proj_bias: Option<&Tensor>,
    out_proj_weight: &Tensor,
    num_heads: i64,
    num_global: i64,
    num_frames: i64,
    needs: NeedsGrad,
    backend: Backend,
) -> Result<Gradients> {
    // grad_out has the shape, dtype and device of x.
    let d = check_inputs(grad_out, in_proj_weight, in_proj_bias, out_proj_weight, None, num_heads, num_global, num_frames)?;
    let shape = [d.batch, d.seq(), d.dim];
    if let Some(x) = x {
        checks::check_param("x", x, &shape, grad_out)?;
    }
    let qkv = match (qkv, x) {
        (Some(qkv), _) => {
            checks::check_param("qkv", qkv, &[d.batch, d.seq(), 3 * d.dim], grad_out)?;
            qkv.shallow_clone()
        }
        (None, Some(x)) => x.f_linear(in_proj_weight, in_proj_bias)?,
        (None, None) => return Err(crate::DglError::value("qkv", "give the saved projection `qkv` or the input `x`")),
    };
    let x_for_weight = match (needs.in_proj_weight, x) {
        (true, None) => return Err(crate::DglError::value("x", "the gradient of `in_proj_weight` needs the input `x`")),
        (_, x) => x,
    };
    let backend = backend.resolve(grad_out.device(), grad_out.kind(), d.head_dim)?;
    let mut grads = Gradients { x: None, in_proj_weight: None, in_proj_bias: None, out_proj_weight: None, out_proj_bias: None };
    if needs.out_proj_bias {
        grads.out_proj_bias = Some(bias_grad(grad_out)?);
    }
    let need_attention = needs.x || needs.in_proj_weight || needs.in_proj_bias;
    if !(need_attention || needs.out_proj_weight) {
        return Ok(grads);
    }
    // Recompute both attentions from the projection (no attention output was saved).
    let v = views(&qkv, &d)?;
    let ((o_loc, lse_loc), global) = attend(&v, &d, backend)?;
    if needs.out_proj_weight {
        grads.out_proj_weight = Some(weight_grad(grad_out, &packed(&o_loc, global.as_ref().map(|g| &g.0), &d)?)?);
    }
    if !need_attention {
        return Ok(grads);
    }
    let grad_attn = grad_out.f_matmul(out_proj_weight)?;
    let (dq_loc, dk_loc, dv_loc) = sdpa::sdpa_backward(
        &frames_to_heads(&grad_attn, &d)?,
        &v.q_loc,
        &v.k_loc,
        &v.v_loc,
        &o_loc,
        &lse_loc,
        d.scale(),
        backend,
    )?;
    // Local key/value gradients: G's share is summed over the frames that repeated it.
    let split_local = |g: &Tensor| -> Result<(Option<Tensor>, Tensor)> {
        let g = g.f_transpose(1, 2)?.f_reshape(
            [d.batch, d.frames, d.num_global + d.tokens, d.heads, d.head_dim].as_slice(),
        )?;
        let frames = g.f_narrow(2, d.num_global, d.tokens)?.f_reshape(
            [d.batch, d.frames * d.tokens, d.heads, d.head_dim].as_slice(),
        )?;
        let global = if d.num_global > 0 {
            Some(g.f_narrow(2, 0, d.num_global)?.f_sum_dim_intlist([1i64].as_slice(), false, g.kind())?)
        } else {
            None
        };
        Ok((global, frames))
    };
    let dq_frames = dq_loc.f_transpose(1, 2)?.f_reshape([d.batch, d.frames * d.tokens, d.heads, d.head_dim].as_slice())?;
    let (dk_g_loc, dk_frames) = split_local(&dk_loc)?;
    let (dv_g_loc, dv_frames) = split_local(&dv_loc)?;
    let (dq, dk, dv) = match (&v.global, global, dk_g_loc, dv_g_loc) {
        (Some((q_g, k_all, v_all)), Some((o_g, lse_g)), Some(dk_g), Some(dv_g)) => {
            let (dq_g, dk_all, dv_all) = sdpa::sdpa_backward(
                &globals_to_heads(&grad_attn, &d)?,
                q_g,
                k_all,
                v_all,
                &o_g,
                &lse_g,
                d.scale(),
                backend,
            )?;
            let dq = Tensor::f_cat(&[dq_g.f_transpose(1, 2)?, dq_frames], 1)?;
            let dk = Tensor::f_cat(&[dk_g, dk_frames], 1)?.f_add(&dk_all.f_transpose(1, 2)?)?;
            let dv = Tensor::f_cat(&[dv_g, dv_frames], 1)?.f_add(&dv_all.f_transpose(1, 2)?)?;
            (dq, dk, dv)
        }
        (None, None, None, None) => (dq_frames, dk_frames, dv_frames),
        _ => return Err(crate::DglError::value("num_global", "inconsistent global attention state")),
    };
    let dqkv = Tensor::f_stack(&[dq, dk, dv], 2)?.f_reshape([d.batch, d.seq(), 3 * d.dim].as_slice())?;
    if needs.x {
        grads.x = Some(dqkv.f_matmul(in_proj_weight)?);
    }
    if let (true, Some(x)) = (needs.in_proj_weight, x_for_weight) {
        grads.in_proj_weight = Some(weight_grad(&dqkv, x)?);
    }
    if needs.in_proj_bias {
        grads.in_proj_bias = Some(bias_grad(&dqkv)?);
    }
    Ok(grads)
}

#[cfg(test)]
mod tests;

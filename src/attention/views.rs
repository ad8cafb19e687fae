//! The kernel calls of each mode, read from one q/k/v projection, and the way their
//! results and gradients go back to the packed sequence.
//!
//! Layouts: "tokens" is `(batch, seq, heads, head_dim)` (a view of a `(batch, seq,
//! dim)` tensor); "kernel" is `(n, heads, tokens, head_dim)`, what `sdpa` takes;
//! "per frame" is the kernel layout of `[G ; frame_t]` for every frame,
//! `(batch*frames, heads, G + tokens, head_dim)`.

use super::checks::Dims;
use super::mode::Mode;
use super::sdpa::{self, Backend};
use crate::{DglError, Result};
use tch::Tensor;

/// One kernel call, computed: its inputs and what its backward needs `(out, lse)`.
pub(super) struct Part {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
}

impl Part {
    fn new(q: Tensor, k: Tensor, v: Tensor, d: &Dims, backend: Backend) -> Result<Self> {
        let (out, lse) = sdpa::sdpa_forward(&q, &k, &v, d.scale(), backend)?;
        Ok(Part { q, k, v, out, lse })
    }

    /// `(dq, dk, dv)` in the kernel layout, from `dout` in the kernel layout.
    fn backward(
        &self,
        dout: &Tensor,
        d: &Dims,
        backend: Backend,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let saved = sdpa::Saved { q: &self.q, k: &self.k, v: &self.v, out: &self.out, lse: &self.lse };
        sdpa::sdpa_backward(dout, &saved, d.scale(), backend)
    }
}

/// The attentions of one mode over one projection, computed.
pub(super) enum Attention {
    /// Frame queries on `[G ; frame]`; when G > 0, the G queries on every token.
    GlobalLocal { local: Part, global: Option<Part> },
    /// Queries `[G ; frame]` on `[G ; frame]`, every frame in one batched call.
    Local(Part),
    /// Every query on every token.
    Global(Part),
}

/// How the per-frame copies of G combine.
#[derive(Clone, Copy)]
enum Reduce {
    Sum,
    Mean,
}

/// `(batch, seq, dim)` -> tokens layout.
fn split_heads(t: &Tensor, d: &Dims) -> Result<Tensor> {
    Ok(t.f_reshape([d.batch, d.seq(), d.heads, d.head_dim].as_slice())?)
}

/// Kernel layout `(n, heads, m, head_dim)` -> `(batch, n * m / batch, dim)`.
fn merge_heads(t: &Tensor, d: &Dims) -> Result<Tensor> {
    Ok(t.f_transpose(1, 2)?
        .f_reshape([d.batch, -1, d.dim].as_slice())?)
}

/// Tokens layout -> the frames' tokens, kernel layout `(batch*frames, heads, tokens, head_dim)`.
fn frames(t: &Tensor, d: &Dims) -> Result<Tensor> {
    Ok(t.f_narrow(1, d.num_global, d.frames * d.tokens)?
        .f_reshape([d.batch * d.frames, d.tokens, d.heads, d.head_dim].as_slice())?
        .f_transpose(1, 2)?)
}

/// Tokens layout -> G's tokens, kernel layout `(batch, heads, G, head_dim)`.
fn globals(t: &Tensor, d: &Dims) -> Result<Tensor> {
    Ok(t.f_narrow(1, 0, d.num_global)?.f_transpose(1, 2)?)
}

/// Tokens layout -> per frame: G repeated for every frame, then the frame's own tokens.
fn per_frame(t: &Tensor, d: &Dims) -> Result<Tensor> {
    let frames = t.f_narrow(1, d.num_global, d.frames * d.tokens)?;
    let kv = if d.num_global == 0 {
        frames.f_reshape([d.batch * d.frames, d.tokens, d.heads, d.head_dim].as_slice())?
    } else {
        let g = t.f_narrow(1, 0, d.num_global)?.f_unsqueeze(1)?.f_expand(
            [d.batch, d.frames, d.num_global, d.heads, d.head_dim].as_slice(),
            false,
        )?;
        let f = frames.f_reshape([d.batch, d.frames, d.tokens, d.heads, d.head_dim].as_slice())?;
        Tensor::f_cat(&[g, f], 2)?.f_reshape(
            [
                d.batch * d.frames,
                d.num_global + d.tokens,
                d.heads,
                d.head_dim,
            ]
            .as_slice(),
        )?
    };
    Ok(kv.f_transpose(1, 2)?)
}

/// Per frame -> tokens layout, G's T copies combined by `reduce`.
fn from_per_frame(t: &Tensor, d: &Dims, reduce: Reduce) -> Result<Tensor> {
    let t = t.f_transpose(1, 2)?.f_reshape(
        [
            d.batch,
            d.frames,
            d.num_global + d.tokens,
            d.heads,
            d.head_dim,
        ]
        .as_slice(),
    )?;
    let frames = t
        .f_narrow(2, d.num_global, d.tokens)?
        .f_reshape([d.batch, d.frames * d.tokens, d.heads, d.head_dim].as_slice())?;
    if d.num_global == 0 {
        return Ok(frames);
    }
    let g = t.f_narrow(2, 0, d.num_global)?;
    let g = match reduce {
        Reduce::Sum => g.f_sum_dim_intlist([1i64].as_slice(), false, g.kind())?,
        Reduce::Mean => g.f_mean_dim([1i64].as_slice(), false, g.kind())?,
    };
    Ok(Tensor::f_cat(&[g, frames], 1)?)
}

/// `(dq, dk, dv)` in the tokens layout -> the projection's gradient `(batch, seq, 3 * dim)`.
fn stack_qkv(dq: Tensor, dk: Tensor, dv: Tensor, d: &Dims) -> Result<Tensor> {
    Ok(Tensor::f_stack(&[dq, dk, dv], 2)?.f_reshape([d.batch, d.seq(), 3 * d.dim].as_slice())?)
}

impl Attention {
    /// Every kernel call of `mode` on the projection `qkv (batch, seq, 3 * dim)`.
    pub(super) fn compute(qkv: &Tensor, d: &Dims, mode: Mode, backend: Backend) -> Result<Self> {
        let qkv = qkv.f_view([d.batch, d.seq(), 3, d.heads, d.head_dim].as_slice())?;
        let (q, k, v) = (
            qkv.f_select(2, 0)?,
            qkv.f_select(2, 1)?,
            qkv.f_select(2, 2)?,
        );
        Ok(match mode {
            Mode::GlobalLocal => {
                let local = Part::new(
                    frames(&q, d)?,
                    per_frame(&k, d)?,
                    per_frame(&v, d)?,
                    d,
                    backend,
                )?;
                let global = if d.num_global > 0 {
                    let (k, v) = (k.f_transpose(1, 2)?, v.f_transpose(1, 2)?);
                    Some(Part::new(globals(&q, d)?, k, v, d, backend)?)
                } else {
                    None
                };
                Attention::GlobalLocal { local, global }
            }
            Mode::Local => Attention::Local(Part::new(
                per_frame(&q, d)?,
                per_frame(&k, d)?,
                per_frame(&v, d)?,
                d,
                backend,
            )?),
            Mode::Global => {
                let (q, k, v) = (
                    q.f_transpose(1, 2)?,
                    k.f_transpose(1, 2)?,
                    v.f_transpose(1, 2)?,
                );
                Attention::Global(Part::new(q, k, v, d, backend)?)
            }
        })
    }

    /// The attention result in the packed layout `(batch, seq, dim)`, before `out_proj`.
    pub(super) fn packed(&self, d: &Dims) -> Result<Tensor> {
        match self {
            Attention::GlobalLocal { local, global } => {
                let o_loc = merge_heads(&local.out, d)?;
                match global {
                    Some(g) => Ok(Tensor::f_cat(&[merge_heads(&g.out, d)?, o_loc], 1)?),
                    None => Ok(o_loc),
                }
            }
            Attention::Local(p) => Ok(from_per_frame(&p.out, d, Reduce::Mean)?
                .f_reshape([d.batch, d.seq(), d.dim].as_slice())?),
            Attention::Global(p) => merge_heads(&p.out, d),
        }
    }

    /// The attention probabilities of the G global queries over the packed sequence,
    /// `(batch, heads, G, seq)`, rows summing to 1: per head, the global tokens'
    /// attention result is exactly `weights @ v`. Only the G query rows are formed
    /// (the frame tokens' local probabilities never are).
    ///
    /// - `GlobalLocal` and `Global`: the G queries' softmax over every key.
    /// - `Local`: G attends within each `[G ; frame_t]` and takes the mean of its T
    ///   results, so its effective weights are the mean over frames of its
    ///   probabilities on the G keys, and `1/T` of frame t's probabilities on that
    ///   frame's tokens.
    pub(super) fn global_weights(&self, d: &Dims) -> Result<Tensor> {
        let rows = |p: &Part| -> Result<Tensor> {
            sdpa::probabilities(&p.q.f_narrow(2, 0, d.num_global)?, &p.k, d.scale())
        };
        match self {
            Attention::GlobalLocal { global: Some(g), .. } => rows(g),
            Attention::Global(p) => rows(p),
            Attention::Local(p) if d.num_global > 0 => local_weights(&rows(p)?, d),
            _ => Ok(Tensor::f_zeros(
                [d.batch, d.heads, 0, d.seq()].as_slice(),
                (self.kind(), self.device()),
            )?),
        }
    }

    fn kind(&self) -> tch::Kind {
        match self {
            Attention::GlobalLocal { local, .. } => local.q.kind(),
            Attention::Local(p) | Attention::Global(p) => p.q.kind(),
        }
    }

    fn device(&self) -> tch::Device {
        match self {
            Attention::GlobalLocal { local, .. } => local.q.device(),
            Attention::Local(p) | Attention::Global(p) => p.q.device(),
        }
    }

    /// The gradient of the projection `(batch, seq, 3 * dim)` from that of `packed`.
    pub(super) fn qkv_grad(&self, grad: &Tensor, d: &Dims, backend: Backend) -> Result<Tensor> {
        let grad = split_heads(grad, d)?;
        match self {
            Attention::GlobalLocal { local, global } => {
                global_local_grad(local, global.as_ref(), &grad, d, backend)
            }
            Attention::Local(p) => local_grad(p, &grad, d, backend),
            Attention::Global(p) => {
                let (dq, dk, dv) = p.backward(&grad.f_transpose(1, 2)?, d, backend)?;
                stack_qkv(
                    dq.f_transpose(1, 2)?,
                    dk.f_transpose(1, 2)?,
                    dv.f_transpose(1, 2)?,
                    d,
                )
            }
        }
    }
}

/// Mode `GlobalLocal`: G's local key/value share is summed over the frames that
/// repeated it, and the global call adds to every key/value.
fn global_local_grad(
    local: &Part,
    global: Option<&Part>,
    grad: &Tensor,
    d: &Dims,
    backend: Backend,
) -> Result<Tensor> {
    let (dq_loc, dk_loc, dv_loc) = local.backward(&frames(grad, d)?, d, backend)?;
    let dq_frames = dq_loc
        .f_transpose(1, 2)?
        .f_reshape([d.batch, d.frames * d.tokens, d.heads, d.head_dim].as_slice())?;
    let (dk, dv) = (
        from_per_frame(&dk_loc, d, Reduce::Sum)?,
        from_per_frame(&dv_loc, d, Reduce::Sum)?,
    );
    match global {
        Some(g) => {
            let (dq_g, dk_all, dv_all) = g.backward(&globals(grad, d)?, d, backend)?;
            let dq = Tensor::f_cat(&[dq_g.f_transpose(1, 2)?, dq_frames], 1)?;
            let dk = dk.f_add(&dk_all.f_transpose(1, 2)?)?;
            let dv = dv.f_add(&dv_all.f_transpose(1, 2)?)?;
            stack_qkv(dq, dk, dv, d)
        }
        None if d.num_global == 0 => stack_qkv(dq_frames, dk, dv, d),
        None => Err(DglError::value(
            "num_global",
            "inconsistent global attention state",
        )),
    }
}

/// Mode `Local`: G's output is the mean of its T per-frame results, so each frame's
/// copy of G gets 1/T of G's gradient; every per-frame copy of G sums back.
fn local_grad(p: &Part, grad: &Tensor, d: &Dims, backend: Backend) -> Result<Tensor> {
    let grad = if d.num_global > 0 && d.frames > 1 {
        let g = grad
            .f_narrow(1, 0, d.num_global)?
            .f_mul_scalar(1.0 / d.frames as f64)?;
        Tensor::f_cat(
            &[g, grad.f_narrow(1, d.num_global, d.frames * d.tokens)?],
            1,
        )?
    } else {
        grad.shallow_clone()
    };
    let (dq, dk, dv) = p.backward(&per_frame(&grad, d)?, d, backend)?;
    let back = |t: &Tensor| from_per_frame(t, d, Reduce::Sum);
    stack_qkv(back(&dq)?, back(&dk)?, back(&dv)?, d)
}

/// Mode `Local`: G's per-frame probabilities `(batch*frames, heads, G, G + tokens)` ->
/// its effective weights over the packed sequence `(batch, heads, G, seq)`.
fn local_weights(p: &Tensor, d: &Dims) -> Result<Tensor> {
    let (g, l, t) = (d.num_global, d.tokens, d.frames);
    let p = p.f_reshape([d.batch, t, d.heads, g, g + l].as_slice())?;
    let on_g = p.f_narrow(4, 0, g)?.f_mean_dim([1i64].as_slice(), false, p.kind())?;
    let on_frames = p
        .f_narrow(4, g, l)?
        .f_div_scalar(t as f64)?
        .f_permute([0i64, 2, 3, 1, 4].as_slice())?
        .f_reshape([d.batch, d.heads, g, t * l].as_slice())?;
    Ok(Tensor::f_cat(&[on_g, on_frames], 3)?)
}

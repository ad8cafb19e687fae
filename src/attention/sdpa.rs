//! Scaled-dot-product attention kernels behind one interface.
//!
//! `sdpa_forward(q, k, v)` returns `(out, lse)` and `sdpa_backward(dout, &Saved { q,
//! k, v, out, lse })` returns `(dq, dk, dv)`. Tensors are `(batch, heads, tokens,
//! head_dim)` views whose last dimension is contiguous; other strides are free.
//! `lse` is the row-wise log-sum-exp of the scaled scores, `(batch, heads, tokens)`,
//! float32 for half types. Saving `(out, lse)` is all a backward needs: no score
//! matrix is ever kept.
//!
//! Backends:
//! - `Flash`: libtorch's CPU flash attention (`_scaled_dot_product_flash_attention_for_cpu`).
//! - `Efficient`: the CUDA memory-efficient kernel (`_scaled_dot_product_efficient_attention`,
//!   backward through `_efficient_attention_backward` in its (B, M, H, K) layout).
//! - `Math`: explicit matmul + softmax, recomputing the probabilities from `lse`
//!   in the backward (any device, any floating dtype; float64 on CUDA uses it).

use crate::{DglError, Result};
use tch::{Device, Kind, Tensor};

/// Which kernel computes the attention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// Pick the fastest kernel for the device and dtype.
    #[default]
    Auto,
    Flash,
    Efficient,
    Math,
}

impl Backend {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "auto" => Ok(Backend::Auto),
            "flash" => Ok(Backend::Flash),
            "efficient" => Ok(Backend::Efficient),
            "math" => Ok(Backend::Math),
            other => Err(DglError::value(
                "backend",
                format!("expected one of 'auto', 'flash', 'efficient', 'math', got {other:?}"),
            )),
        }
    }

    /// The concrete backend for tensors of this device, dtype and head size.
    pub fn resolve(self, device: Device, kind: Kind, head_dim: i64) -> Result<Self> {
        let cuda = device.is_cuda();
        let efficient_ok = cuda
            && match kind {
                Kind::Half | Kind::BFloat16 => head_dim % 8 == 0,
                Kind::Float => head_dim % 4 == 0,
                _ => false,
            };
        match self {
            Backend::Auto if cuda && efficient_ok => Ok(Backend::Efficient),
            Backend::Auto if cuda => Ok(Backend::Math),
            Backend::Auto => Ok(Backend::Flash),
            Backend::Flash if cuda => Err(DglError::Unsupported(vec![
                "backend 'flash' is the CPU flash kernel; on CUDA use 'auto', 'efficient' or 'math'".into(),
            ])),
            Backend::Efficient if !efficient_ok => Err(DglError::Unsupported(vec![format!(
                "backend 'efficient' needs a CUDA tensor of float16/bfloat16 (head_dim % 8 == 0) or \
                 float32 (head_dim % 4 == 0); got {} on {device:?} with head_dim {head_dim}",
                crate::attention::checks::kind_name(kind)
            )])),
            b => Ok(b),
        }
    }
}

/// Forward: `(out, lse)`; `out` has the shape of `q`.
pub fn sdpa_forward(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, backend: Backend) -> Result<(Tensor, Tensor)> {
    match backend {
        Backend::Flash => {
            Ok(Tensor::f_internal_scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, false, None::<Tensor>, scale)?)
        }
        Backend::Efficient => {
            let (out, lse, _seed, _offset) =
                Tensor::f_internal_scaled_dot_product_efficient_attention(q, k, v, None::<Tensor>, true, 0.0, false, scale)?;
            // The kernel pads lse to a multiple of 32 rows; keep the real rows.
            let m = tokens(q)?;
            let lse = lse.f_narrow(2, 0, m)?;
            Ok((out, lse))
        }
        Backend::Math => math_forward(q, k, v, scale),
        Backend::Auto => Err(DglError::value("backend", "resolve 'auto' before calling the kernel")),
    }
}

/// One forward call's inputs and results: all that its backward needs.
#[derive(Clone, Copy)]
pub struct Saved<'a> {
    pub q: &'a Tensor,
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    pub out: &'a Tensor,
    pub lse: &'a Tensor,
}

/// Backward: `(dq, dk, dv)` from the saved inputs and `(out, lse)`.
pub fn sdpa_backward(dout: &Tensor, s: &Saved<'_>, scale: f64, backend: Backend) -> Result<(Tensor, Tensor, Tensor)> {
    match backend {
        Backend::Flash => Ok(Tensor::f_internal_scaled_dot_product_flash_attention_for_cpu_backward(
            dout,
            s.q,
            s.k,
            s.v,
            s.out,
            s.lse,
            0.0,
            false,
            None::<Tensor>,
            scale,
        )?),
        Backend::Efficient => efficient_backward(dout, s, scale),
        Backend::Math => math_backward(dout, s, scale),
        Backend::Auto => Err(DglError::value("backend", "resolve 'auto' before calling the kernel")),
    }
}

/// The tokens dimension of a `(batch, heads, tokens, head_dim)` tensor.
fn tokens(t: &Tensor) -> Result<i64> {
    t.size().get(2).copied().ok_or_else(|| DglError::shape("q/k", "(batch, heads, tokens, head_dim)", t.size()))
}

/// The attention probabilities `softmax(q k^T * scale)` of `(n, heads, m, head_dim)`
/// queries on `(n, heads, s, head_dim)` keys: `(n, heads, m, s)`, computed in the
/// accumulation dtype and returned in the dtype of `q`. Only for a few query rows
/// (the global tokens'): it forms the `m x s` matrix.
pub fn probabilities(q: &Tensor, k: &Tensor, scale: f64) -> Result<Tensor> {
    let kind = q.kind();
    let acc = acc_kind(kind);
    let scores = q.f_to_kind(acc)?.f_matmul(&k.f_to_kind(acc)?.f_transpose(-2, -1)?)?.f_mul_scalar(scale)?;
    Ok(scores.f_softmax(-1, acc)?.f_to_kind(kind)?)
}

/// The accumulation dtype: float32 for half types, the input dtype otherwise.
fn acc_kind(kind: Kind) -> Kind {
    match kind {
        Kind::Half | Kind::BFloat16 => Kind::Float,
        k => k,
    }
}

fn math_forward(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<(Tensor, Tensor)> {
    let kind = q.kind();
    let acc = acc_kind(kind);
    let (qa, ka, va) = (q.f_to_kind(acc)?, k.f_to_kind(acc)?, v.f_to_kind(acc)?);
    let scores = qa.f_matmul(&ka.f_transpose(-2, -1)?)?.f_mul_scalar(scale)?;
    let lse = scores.f_logsumexp([-1i64].as_slice(), false)?;
    let probs = scores.f_sub(&lse.f_unsqueeze(-1)?)?.f_exp()?;
    let out = probs.f_matmul(&va)?.f_to_kind(kind)?;
    Ok((out, lse))
}

fn math_backward(dout: &Tensor, s: &Saved<'_>, scale: f64) -> Result<(Tensor, Tensor, Tensor)> {
    let Saved { q, k, v, out, lse } = *s;
    let kind = q.kind();
    let acc = acc_kind(kind);
    let (qa, ka, va) = (q.f_to_kind(acc)?, k.f_to_kind(acc)?, v.f_to_kind(acc)?);
    let (da, oa) = (dout.f_to_kind(acc)?, out.f_to_kind(acc)?);
    // P = exp(S - lse), recomputed: nothing of size tokens x keys was saved.
    let scores = qa.f_matmul(&ka.f_transpose(-2, -1)?)?.f_mul_scalar(scale)?;
    let probs = scores.f_sub(&lse.f_to_kind(acc)?.f_unsqueeze(-1)?)?.f_exp()?;
    let dv = probs.f_transpose(-2, -1)?.f_matmul(&da)?;
    let dp = da.f_matmul(&va.f_transpose(-2, -1)?)?;
    // delta_i = sum_j P_ij dP_ij = dout_i . out_i
    let delta = da.f_mul(&oa)?.f_sum_dim_intlist([-1i64].as_slice(), true, acc)?;
    let ds = probs.f_mul(&dp.f_sub(&delta)?)?.f_mul_scalar(scale)?;
    let dq = ds.f_matmul(&ka)?;
    let dk = ds.f_transpose(-2, -1)?.f_matmul(&qa)?;
    Ok((dq.f_to_kind(kind)?, dk.f_to_kind(kind)?, dv.f_to_kind(kind)?))
}

/// The memory-efficient CUDA backward, called the way libtorch's
/// `_scaled_dot_product_efficient_attention_backward_cuda` calls it.
fn efficient_backward(dout: &Tensor, s: &Saved<'_>, scale: f64) -> Result<(Tensor, Tensor, Tensor)> {
    let Saved { q, k, v, out, lse } = *s;
    let (m, n) = (tokens(q)?, tokens(k)?);
    // The kernel expects lse padded to a multiple of 32 rows, as its forward made it.
    let padded = (m + 31) / 32 * 32;
    let lse = if padded == m { lse.f_contiguous()? } else { lse.f_constant_pad_nd([0, padded - m].as_slice())? };
    // Dropout is 0: the RNG state is never read; pass what the forward returns then.
    let seed = Tensor::f_empty([0i64; 0].as_slice(), (Kind::Int64, Device::Cpu))?;
    let offset = Tensor::f_empty([0i64; 0].as_slice(), (Kind::Int64, Device::Cpu))?;
    let t = |x: &Tensor| -> Result<Tensor> { Ok(x.f_transpose(1, 2)?) };
    let (dq, dk, dv, _dbias) = Tensor::f_internal_efficient_attention_backward(
        &t(dout)?.f_contiguous()?,
        &t(q)?,
        &t(k)?,
        &t(v)?,
        None::<Tensor>,
        &t(out)?,
        None::<Tensor>,
        None::<Tensor>,
        m,
        n,
        &lse,
        0.0,
        &seed,
        &offset,
        0,
        false,
        scale,
        None::<i64>,
        None::<i64>,
        false,
    )?;
    Ok((dq.f_transpose(1, 2)?, dk.f_transpose(1, 2)?, dv.f_transpose(1, 2)?))
}

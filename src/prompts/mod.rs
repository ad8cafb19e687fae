//! DGL's local prompt generators (DGL-SPEC section 5), on tch tensors.
//!
//! The prompts do not depend on the input sample, so they are computed ONCE per
//! forward and broadcast over the batch. The learnable tensors are owned by
//! Python `nn.Module`s; these functions only compute with them, with libtorch
//! autograd recording the ops, so gradients reach the parameters.
//!
//! Both return `(text, frames)`:
//! - `text`: `(layers, n_pre + n_post, D_t)`;
//! - `frames`: `(layers, frames, n_f, D_v)` (for DGL-Linear an expanded view:
//!   every frame position shares the same prompts).

use crate::attention::checks::{check_param, kind_name};
use crate::{DglError, Result};
use tch::Tensor;

/// DGL-Linear: `frame_prompts` F `(layers, n_f, D_v)`; prefix = W_pre F_i + b_pre and
/// postfix = W_post F_i + b_post, `(D_t, D_v)` weights shared by all layers.
pub fn linear_prompts(
    frame_prompts: &Tensor,
    pre_weight: &Tensor,
    pre_bias: &Tensor,
    post_weight: &Tensor,
    post_bias: &Tensor,
    num_frames: i64,
) -> Result<(Tensor, Tensor)> {
    let size = frame_prompts.size();
    let &[layers, n_f, d_v] = size.as_slice() else {
        return Err(DglError::shape("frame_prompts", "(layers, n_f, D_v), 3-D", size));
    };
    if num_frames < 1 {
        return Err(DglError::value("num_frames", format!("must be >= 1, got {num_frames}")));
    }
    let d_t = pre_weight.size().first().copied().unwrap_or(0);
    check_param("pre_weight", pre_weight, &[d_t, d_v], frame_prompts)?;
    check_param("pre_bias", pre_bias, &[d_t], frame_prompts)?;
    check_param("post_weight", post_weight, &[d_t, d_v], frame_prompts)?;
    check_param("post_bias", post_bias, &[d_t], frame_prompts)?;
    let text = Tensor::f_cat(
        &[frame_prompts.f_linear(pre_weight, Some(pre_bias))?, frame_prompts.f_linear(post_weight, Some(post_bias))?],
        1,
    )?;
    let frames = frame_prompts.f_unsqueeze(1)?.f_expand([layers, num_frames, n_f, d_v].as_slice(), false)?;
    Ok((text, frames))
}

/// The one transformer block of DGL-Transformer (pre-LN, QuickGELU MLP), as
/// `[ln_1.w, ln_1.b, in_proj.w, in_proj.b, out_proj.w, out_proj.b, ln_2.w, ln_2.b,
///   c_fc.w, c_fc.b, c_proj.w, c_proj.b]`.
pub const BLOCK_TENSORS: usize = 12;
/// The text MLP D_v -> 2 D_v -> D_t: `[fc1.w, fc1.b, fc2.w, fc2.b]`.
pub const MLP_TENSORS: usize = 4;

fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_mul(&x.f_mul_scalar(1.702)?.f_sigmoid()?)?)
}

fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, dim: i64) -> Result<Tensor> {
    Ok(x.f_layer_norm([dim].as_slice(), Some(w), Some(b), 1e-5, false)?)
}

/// DGL-Transformer: the unified table U `(n_text + frames * n_f, layers * D_v)` read
/// as `layers` sequences of width D_v, one transformer block over each (the layers
/// are the batch), the first `n_text` outputs through the MLP to D_t (text prompts),
/// the rest are the frame prompts, different for every frame position.
pub fn transformer_prompts(
    table: &Tensor,
    block: &[Tensor],
    mlp: &[Tensor],
    num_layers: i64,
    num_heads: i64,
    num_text: i64,
    num_frames: i64,
) -> Result<(Tensor, Tensor)> {
    let size = table.size();
    let &[rows, width] = size.as_slice() else {
        return Err(DglError::shape("table", "(n_text + frames * n_f, layers * D_v), 2-D", size));
    };
    if num_layers < 1 || width % num_layers != 0 {
        return Err(DglError::value("num_layers", format!("must be >= 1 and divide the table width {width}, got {num_layers}")));
    }
    let d_v = width / num_layers;
    if num_heads < 1 || d_v % num_heads != 0 {
        return Err(DglError::value("num_heads", format!("must be >= 1 and divide D_v = {d_v}, got {num_heads}")));
    }
    let n_frame_rows = rows - num_text;
    if num_text < 0 || num_frames < 1 || n_frame_rows < 0 || n_frame_rows % num_frames != 0 {
        return Err(DglError::shape(
            "table",
            format!("(n_text + frames * n_f, layers * D_v) with n_text = {num_text}, frames = {num_frames}"),
            size,
        ));
    }
    let n_f = n_frame_rows / num_frames;
    let [ln1_w, ln1_b, in_w, in_b, out_w, out_b, ln2_w, ln2_b, fc_w, fc_b, pr_w, pr_b] = block else {
        return Err(DglError::value("block", format!("expected {BLOCK_TENSORS} tensors, got {}", block.len())));
    };
    let [m1_w, m1_b, m2_w, m2_b] = mlp else {
        return Err(DglError::value("mlp", format!("expected {MLP_TENSORS} tensors, got {}", mlp.len())));
    };
    let hidden = fc_w.size().first().copied().unwrap_or(0);
    for (name, t, shape) in [
        ("ln_1.weight", ln1_w, vec![d_v]),
        ("ln_1.bias", ln1_b, vec![d_v]),
        ("attn.in_proj_weight", in_w, vec![3 * d_v, d_v]),
        ("attn.in_proj_bias", in_b, vec![3 * d_v]),
        ("attn.out_proj.weight", out_w, vec![d_v, d_v]),
        ("attn.out_proj.bias", out_b, vec![d_v]),
        ("ln_2.weight", ln2_w, vec![d_v]),
        ("ln_2.bias", ln2_b, vec![d_v]),
        ("mlp.c_fc.weight", fc_w, vec![hidden, d_v]),
        ("mlp.c_fc.bias", fc_b, vec![hidden]),
        ("mlp.c_proj.weight", pr_w, vec![d_v, hidden]),
        ("mlp.c_proj.bias", pr_b, vec![d_v]),
    ] {
        check_param(name, t, &shape, table)?;
    }
    let mid = m1_w.size().first().copied().unwrap_or(0);
    let d_t = m2_w.size().first().copied().unwrap_or(0);
    check_param("text_mlp.0.weight", m1_w, &[mid, d_v], table)?;
    check_param("text_mlp.0.bias", m1_b, &[mid], table)?;
    check_param("text_mlp.2.weight", m2_w, &[d_t, mid], table)?;
    check_param("text_mlp.2.bias", m2_b, &[d_t], table)?;
    if !matches!(table.kind(), tch::Kind::Float | tch::Kind::Double | tch::Kind::Half | tch::Kind::BFloat16) {
        return Err(DglError::dtype("table", "a floating dtype", kind_name(table.kind())));
    }

    // (rows, layers * D_v) -> (layers, rows, D_v): the layers are the batch.
    let x = table.f_view([rows, num_layers, d_v].as_slice())?.f_transpose(0, 1)?;
    let hd = d_v / num_heads;
    let h = layer_norm(&x, ln1_w, ln1_b, d_v)?.f_linear(in_w, Some(in_b))?;
    let heads = |t: Tensor| -> Result<Tensor> {
        Ok(t.f_view([num_layers, rows, num_heads, hd].as_slice())?.f_transpose(1, 2)?)
    };
    let qkv = h.f_split(d_v, -1)?;
    let [q, k, v] = <[Tensor; 3]>::try_from(qkv)
        .map_err(|_| DglError::value("attn.in_proj_weight", "q/k/v split failed"))?;
    let a = Tensor::f_scaled_dot_product_attention(
        &heads(q)?,
        &heads(k)?,
        &heads(v)?,
        None::<Tensor>,
        0.0,
        false,
        None::<f64>,
        false,
    )?;
    let a = a.f_transpose(1, 2)?.f_reshape([num_layers, rows, d_v].as_slice())?.f_linear(out_w, Some(out_b))?;
    let x = x.f_add(&a)?;
    let m = quick_gelu(&layer_norm(&x, ln2_w, ln2_b, d_v)?.f_linear(fc_w, Some(fc_b))?)?.f_linear(pr_w, Some(pr_b))?;
    let x = x.f_add(&m)?;

    let text = quick_gelu(&x.f_narrow(1, 0, num_text)?.f_linear(m1_w, Some(m1_b))?)?.f_linear(m2_w, Some(m2_b))?;
    let frames = x.f_narrow(1, num_text, n_frame_rows)?.f_reshape([num_layers, num_frames, n_f, d_v].as_slice())?;
    Ok((text, frames))
}

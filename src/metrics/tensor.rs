//! Ranks on a `tch::Tensor` (CPU or CUDA), one chunk at a time, and the chunked
//! evaluation straight from embeddings.
//!
//! The ranks are computed on the tensor's device with tensor ops; only the ranks
//! (int64, one per query) come back to the host. No temporary is larger than one
//! block:
//!
//! * text->video, chunk of `chunk` captions: the (chunk x videos) block, its
//!   (chunk x videos) bool comparison and the gathered true scores.
//! * video->text, chunk of `chunk` videos (columns): the (captions x chunk) block,
//!   with several captions per video its (videos x chunk) max over each video's
//!   captions (see `Slots`), and the bool comparison.
//!
//! From embeddings (`ranks_chunked`) the blocks are the matrix products
//! `text[r0..r1] @ video.T` and `text @ video[v0..v1].T`, so the full
//! (captions x videos) matrix never exists: 100k x 100k fits on any device that
//! holds a 100k x chunk block.

use super::check::{caption_map, check_shape, CaptionMap, Layout};
use crate::{DglError, Result};
use ndarray::ArrayView1;
use tch::{Device, Kind, Tensor};

fn check_float(arg: &str, t: &Tensor) -> Result<Kind> {
    match t.f_kind()? {
        k @ (Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16) => Ok(k),
        k => Err(DglError::dtype(
            arg,
            "float16, bfloat16, float32 or float64",
            k,
        )),
    }
}

fn dims(t: &Tensor) -> Vec<usize> {
    t.size()
        .into_iter()
        .map(|d| usize::try_from(d).unwrap_or(0))
        .collect()
}

fn check_chunk(chunk: i64) -> Result<i64> {
    if chunk < 1 {
        return Err(DglError::value(
            "chunk",
            format!("must be >= 1, got {chunk}"),
        ));
    }
    Ok(chunk)
}

fn as_i64(n: usize) -> Result<i64> {
    i64::try_from(n).map_err(|_| DglError::value("sim", format!("dimension {n} too large")))
}

/// Text->video ranks of a (captions, videos) tensor, `chunk` captions at a time.
///
/// `sim`: float16/bfloat16/float32/float64 on any device, every entry finite.
/// `caption_to_video` as in [`super::ranks_t2v`]. Returns 1-based int64 ranks.
pub fn ranks_t2v_tensor(
    sim: &Tensor,
    caption_to_video: Option<ArrayView1<'_, i64>>,
    chunk: i64,
) -> Result<Vec<i64>> {
    check_float("sim", sim)?;
    let shape = dims(sim);
    let (n_captions, n_videos) = check_shape("sim", &shape)?;
    let chunk = check_chunk(chunk)?;
    let map = caption_map(caption_to_video, n_captions, n_videos, &Layout::sim(&shape))?;
    t2v_blocks(&map, sim.device(), chunk, "sim", |r0, len| {
        Ok(sim.f_narrow(0, r0, len)?)
    })
}

/// Video->text ranks of a (captions, videos) tensor, `chunk` videos at a time.
///
/// Same protocol as [`super::ranks_v2t`]: `M[u, v] = max over captions c of u of
/// sim[c, v]`, `rank[v] = #{u : M[u, v] >= M[v, v]}`.
pub fn ranks_v2t_tensor(
    sim: &Tensor,
    caption_to_video: Option<ArrayView1<'_, i64>>,
    chunk: i64,
) -> Result<Vec<i64>> {
    check_float("sim", sim)?;
    let shape = dims(sim);
    let (n_captions, n_videos) = check_shape("sim", &shape)?;
    let chunk = check_chunk(chunk)?;
    let map = caption_map(caption_to_video, n_captions, n_videos, &Layout::sim(&shape))?;
    v2t_blocks(&map, sim.device(), chunk, "sim", |v0, len| {
        Ok(sim.f_narrow(1, v0, len)?)
    })
}

/// Checks a pair of embedding matrices; returns (captions, videos).
fn check_embeddings(text_emb: &Tensor, video_emb: &Tensor) -> Result<(usize, usize, Kind)> {
    let kind = check_float("text_emb", text_emb)?;
    let vkind = check_float("video_emb", video_emb)?;
    let ts = dims(text_emb);
    let vs = dims(video_emb);
    let (n_captions, dim) = match ts.as_slice() {
        &[c, d] if c > 0 && d > 0 => (c, d),
        _ => {
            return Err(DglError::shape(
                "text_emb",
                "(captions, dim) with both sides > 0",
                ts,
            ))
        }
    };
    let n_videos = match vs.as_slice() {
        &[v, d] if v > 0 && d == dim => v,
        _ => {
            return Err(DglError::shape(
                "video_emb",
                format!("(videos, {dim}) with videos > 0, to match `text_emb` {ts:?}"),
                vs,
            ))
        }
    };
    if vkind != kind {
        return Err(DglError::dtype(
            "video_emb",
            format!("{kind:?} (the dtype of `text_emb`)"),
            vkind,
        ));
    }
    if video_emb.device() != text_emb.device() {
        return Err(DglError::device(
            "video_emb",
            text_emb.device(),
            video_emb.device(),
        ));
    }
    for (arg, t) in [("text_emb", text_emb), ("video_emb", video_emb)] {
        if !bool::try_from(t.f_isfinite()?.f_all()?)? {
            return Err(DglError::value(
                arg,
                "contains NaN or inf; every entry must be finite",
            ));
        }
    }
    Ok((n_captions, n_videos, kind))
}

/// Text->video and video->text ranks straight from embeddings, never holding
/// more than one block of the (captions x videos) similarity `text_emb @
/// video_emb.T`.
///
/// `text_emb`: (captions, dim), `video_emb`: (videos, dim), same floating dtype
/// and device. Text->video works on (chunk x videos) blocks, video->text on
/// (captions x chunk) blocks reduced to (videos x chunk) by the max over each
/// video's captions. Returns `(t2v_ranks, v2t_ranks)`, 1-based.
pub fn ranks_chunked(
    text_emb: &Tensor,
    video_emb: &Tensor,
    caption_to_video: Option<ArrayView1<'_, i64>>,
    chunk: i64,
) -> Result<(Vec<i64>, Vec<i64>)> {
    let (n_captions, n_videos, _) = check_embeddings(text_emb, video_emb)?;
    let chunk = check_chunk(chunk)?;
    let shape = dims(text_emb);
    let layout = Layout {
        arg: "text_emb",
        shape: &shape,
        square:
            "one row per row of `video_emb` when `caption_to_video` is None (one caption per video)",
        captions: "the rows of `text_emb`",
        videos: "the rows of `video_emb`",
    };
    let map = caption_map(caption_to_video, n_captions, n_videos, &layout)?;
    let device = text_emb.device();
    let video_t = video_emb.f_tr()?;
    let t2v = t2v_blocks(&map, device, chunk, "text_emb", |r0, len| {
        Ok(text_emb.f_narrow(0, r0, len)?.f_matmul(&video_t)?)
    })?;
    let v2t = v2t_blocks(&map, device, chunk, "text_emb", |v0, len| {
        Ok(text_emb.f_matmul(&video_emb.f_narrow(0, v0, len)?.f_tr()?)?)
    })?;
    Ok((t2v, v2t))
}

/// Writes `text_emb @ video_emb.T` into `out`, `chunk` rows at a time.
///
/// `out`: (captions, videos), same dtype as the embeddings, on any device (for
/// example the host while the embeddings live on the GPU: the GPU then holds one
/// (chunk x videos) block at a time).
pub fn similarity_chunked(
    text_emb: &Tensor,
    video_emb: &Tensor,
    out: &Tensor,
    chunk: i64,
) -> Result<()> {
    let (n_captions, n_videos, kind) = check_embeddings(text_emb, video_emb)?;
    let chunk = check_chunk(chunk)?;
    let os = dims(out);
    if os != [n_captions, n_videos] {
        return Err(DglError::shape(
            "out",
            format!("({n_captions}, {n_videos})"),
            os,
        ));
    }
    let okind = out.f_kind()?;
    if okind != kind {
        return Err(DglError::dtype(
            "out",
            format!("{kind:?} (the dtype of `text_emb`)"),
            okind,
        ));
    }
    let video_t = video_emb.f_tr()?;
    let n = as_i64(n_captions)?;
    let mut r0 = 0i64;
    while r0 < n {
        let len = chunk.min(n - r0);
        let block = text_emb.f_narrow(0, r0, len)?.f_matmul(&video_t)?;
        let mut dst = out.f_narrow(0, r0, len)?;
        dst.f_copy_(&block)?;
        r0 += len;
    }
    Ok(())
}

/// Text->video ranks over row blocks: `block(r0, len)` is rows `r0..r0+len` of
/// the similarity, (len x videos).
fn t2v_blocks(
    map: &CaptionMap,
    device: Device,
    chunk: i64,
    arg: &str,
    block: impl Fn(i64, i64) -> Result<Tensor>,
) -> Result<Vec<i64>> {
    let target: Vec<i64> = map
        .target
        .iter()
        .map(|&v| as_i64(v))
        .collect::<Result<_>>()?;
    let n = as_i64(target.len())?;
    let n_videos = map.n_videos();
    let target = Tensor::f_from_slice(&target)?.f_to_device(device)?;
    let mut parts = Vec::new();
    let mut finite = Vec::new();
    let mut r0 = 0i64;
    while r0 < n {
        let len = chunk.min(n - r0);
        let b = block(r0, len)?;
        let truth = b.f_gather(1, &target.f_narrow(0, r0, len)?.f_unsqueeze(1)?, false)?;
        parts.push(
            b.f_ge_tensor(&truth)?
                .f_sum_dim_intlist(1, false, count_kind(n_videos))?,
        );
        finite.push(all_finite(&b)?);
        r0 += len;
    }
    check_finite(&finite, chunk, arg, "rows")?;
    to_vec(&parts)
}

/// Video->text ranks over column blocks: `block(v0, len)` is columns
/// `v0..v0+len` of the similarity, (captions x len).
fn v2t_blocks(
    map: &CaptionMap,
    device: Device,
    chunk: i64,
    arg: &str,
    block: impl Fn(i64, i64) -> Result<Tensor>,
) -> Result<Vec<i64>> {
    let n_videos = as_i64(map.n_videos())?;
    let slots = if map.identity {
        None
    } else {
        Some(Slots::new(map, device)?)
    };
    let mut parts = Vec::new();
    let mut finite = Vec::new();
    let mut v0 = 0i64;
    while v0 < n_videos {
        let len = chunk.min(n_videos - v0);
        let b = block(v0, len)?;
        finite.push(all_finite(&b)?);
        // (videos x len): M[u, v] = max over captions c of u of sim[c, v].
        let reduced = match &slots {
            None => b,
            Some(slots) => slots.reduce_max(&b)?,
        };
        let truth = reduced
            .f_narrow(0, v0, len)?
            .f_diagonal(0, 0, 1)?
            .f_unsqueeze(0)?;
        parts.push(reduced.f_ge_tensor(&truth)?.f_sum_dim_intlist(
            0,
            false,
            count_kind(map.n_videos()),
        )?);
        v0 += len;
    }
    check_finite(&finite, chunk, arg, "columns")?;
    to_vec(&parts)
}

/// The captions of every video as "slots": slot 0 holds the first caption of
/// each video, slot s the (s+1)-th caption of the videos that have one. The max
/// over each video's captions is then one `index_select` per slot (stable ops,
/// O(captions x chunk) work in all) instead of the beta `index_reduce`.
struct Slots {
    first: Tensor,
    rest: Vec<(Tensor, Tensor)>,
}

impl Slots {
    fn new(map: &CaptionMap, device: Device) -> Result<Self> {
        let tensor = |v: &[usize]| -> Result<Tensor> {
            let v: Vec<i64> = v.iter().map(|&x| as_i64(x)).collect::<Result<_>>()?;
            Ok(Tensor::f_from_slice(&v)?.f_to_device(device)?)
        };
        let n_videos = map.n_videos();
        let groups: Vec<&[usize]> = (0..n_videos).map(|u| map.captions_of(u)).collect();
        let first: Vec<usize> = groups
            .iter()
            .map(|g| g.first().copied().unwrap_or(0))
            .collect();
        let max = groups.iter().map(|g| g.len()).max().unwrap_or(0);
        let mut rest = Vec::new();
        for s in 1..max {
            let (caps, vids): (Vec<usize>, Vec<usize>) = groups
                .iter()
                .enumerate()
                .filter_map(|(u, g)| g.get(s).map(|&c| (c, u)))
                .unzip();
            rest.push((tensor(&caps)?, tensor(&vids)?));
        }
        Ok(Slots {
            first: tensor(&first)?,
            rest,
        })
    }

    /// (captions x len) -> (videos x len), the max over each video's captions.
    fn reduce_max(&self, block: &Tensor) -> Result<Tensor> {
        let mut reduced = block.f_index_select(0, &self.first)?;
        for (caps, vids) in &self.rest {
            let best = reduced
                .f_index_select(0, vids)?
                .f_maximum(&block.f_index_select(0, caps)?)?;
            let _ = reduced.f_index_copy_(0, vids, &best)?;
        }
        Ok(reduced)
    }
}

/// Counts up to `n` fit in int32 (about twice as fast to reduce as int64 on CPU).
fn count_kind(n: usize) -> Kind {
    if n < i32::MAX as usize {
        Kind::Int
    } else {
        Kind::Int64
    }
}

/// A 0-d bool tensor, true when every entry of `b` is finite: `amax` and `amin`
/// propagate NaN, so two scalar reductions replace a full bool mask.
fn all_finite(b: &Tensor) -> Result<Tensor> {
    let ext = Tensor::f_stack(
        &[b.f_amax([0i64, 1], false)?, b.f_amin([0i64, 1], false)?],
        0,
    )?;
    Ok(ext.f_isfinite()?.f_all()?)
}

/// One device -> host transfer of the per-chunk finiteness flags.
fn check_finite(flags: &[Tensor], chunk: i64, arg: &str, what: &str) -> Result<()> {
    if flags.is_empty() {
        return Ok(());
    }
    let flags: Vec<bool> =
        Vec::<bool>::try_from(Tensor::f_stack(flags, 0)?.f_to_device(Device::Cpu)?)?;
    match flags.iter().position(|&ok| !ok) {
        None => Ok(()),
        Some(i) => {
            let i = as_i64(i)?;
            Err(DglError::value(
                arg,
                format!(
                    "contains NaN or inf (in similarity {what} {}..{}); every score must be finite",
                    i * chunk,
                    (i + 1) * chunk
                ),
            ))
        }
    }
}

fn to_vec(parts: &[Tensor]) -> Result<Vec<i64>> {
    let all = Tensor::f_cat(parts, 0)?
        .f_to_kind(Kind::Int64)?
        .f_to_device(Device::Cpu)?
        .f_contiguous()?;
    Ok(Vec::<i64>::try_from(&all)?)
}

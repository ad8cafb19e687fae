//! Ranks from a (captions x videos) similarity in host memory.
//!
//! No sorting: for each query the rank is the number of candidates that score at
//! least as high as the true one (`rank = #{j : s_j >= s_true}`, ties
//! pessimistic), O(captions x videos) work, O(videos) extra memory per thread,
//! rayon-parallel. Any layout of `sim` works (a transposed view is not copied);
//! C-contiguous rows are fastest.

use super::check::{caption_map, check_shape, not_finite, CaptionMap, Layout};
use super::Score;
use crate::{DglError, Result};
use ndarray::{ArrayView1, ArrayView2};
use rayon::prelude::*;

const ARG: &str = "sim";

/// Text->video ranks (1-based, one per caption).
///
/// `sim`: (captions, videos), every entry finite. `caption_to_video`: (captions,)
/// int64 video index of each caption, or `None` for one caption per video (then
/// `sim` must be square and the answer of caption `c` is video `c`).
///
/// `rank[c] = #{v : sim[c, v] >= sim[c, caption_to_video[c]]}`.
pub fn ranks_t2v<F: Score>(
    sim: ArrayView2<'_, F>,
    caption_to_video: Option<ArrayView1<'_, i64>>,
) -> Result<Vec<i64>> {
    let (n_captions, n_videos) = check_shape(ARG, sim.shape())?;
    let map = caption_map(
        caption_to_video,
        n_captions,
        n_videos,
        &Layout::sim(sim.shape()),
    )?;
    let rows: Vec<ArrayView1<'_, F>> = sim.outer_iter().collect();
    rows.par_iter()
        .with_min_len(16)
        .zip(map.target.par_iter())
        .enumerate()
        .map(|(c, (row, &t))| rank_in_row(row, t).ok_or_else(|| not_finite(ARG, c, None)))
        .collect()
}

/// Video->text ranks (1-based, one per video), the CLIP4Clip protocol.
///
/// With `M[u, v] = max over captions c of video u of sim[c, v]` (a (videos x
/// videos) matrix that is never built), `rank[v] = #{u : M[u, v] >= M[v, v]}`.
/// With one caption per video these are the text->video ranks of `sim.T`.
pub fn ranks_v2t<F: Score>(
    sim: ArrayView2<'_, F>,
    caption_to_video: Option<ArrayView1<'_, i64>>,
) -> Result<Vec<i64>> {
    let (n_captions, n_videos) = check_shape(ARG, sim.shape())?;
    let map = caption_map(
        caption_to_video,
        n_captions,
        n_videos,
        &Layout::sim(sim.shape()),
    )?;
    let rows: Vec<ArrayView1<'_, F>> = sim.outer_iter().collect();
    let truth = diagonal_max(&sim, &map)?;

    // Each block of caption groups u counts, for every video v, the groups that
    // beat-or-tie the truth: count[v] += [exists c in u : sim[c, v] >= truth[v]].
    let n_blocks = (2 * rayon::current_num_threads()).clamp(1, n_videos);
    let per_block = n_videos.div_ceil(n_blocks);
    let counts = (0..n_blocks)
        .into_par_iter()
        .map(|b| {
            count_block(
                &rows,
                &map,
                &truth,
                b * per_block,
                ((b + 1) * per_block).min(n_videos),
            )
        })
        .try_reduce(
            || vec![0u32; n_videos],
            |mut acc, part| {
                acc.iter_mut().zip(&part).for_each(|(a, p)| *a += p);
                Ok(acc)
            },
        )?;
    Ok(counts.into_iter().map(i64::from).collect())
}

/// `truth[v] = max over captions c of video v of sim[c, v]`.
fn diagonal_max<F: Score>(sim: &ArrayView2<'_, F>, map: &CaptionMap) -> Result<Vec<F>> {
    (0..map.n_videos())
        .map(|v| {
            let mut best: Option<F> = None;
            for &c in map.captions_of(v) {
                let x = *sim
                    .get((c, v))
                    .ok_or_else(|| internal("caption index outside `sim`"))?;
                if !x.finite() {
                    return Err(not_finite(ARG, c, Some(v)));
                }
                best = Some(match best {
                    Some(b) if b >= x => b,
                    _ => x,
                });
            }
            best.ok_or_else(|| internal("video without caption after validation"))
        })
        .collect()
}

/// Counts of the caption groups `u0..u1` against every video (see `ranks_v2t`).
fn count_block<F: Score>(
    rows: &[ArrayView1<'_, F>],
    map: &CaptionMap,
    truth: &[F],
    u0: usize,
    u1: usize,
) -> Result<Vec<u32>> {
    let n_videos = truth.len();
    let mut count = vec![0u32; n_videos];
    let mut hit: Vec<bool> = Vec::new();
    for u in u0..u1 {
        let captions = map.captions_of(u);
        if let [c] = captions {
            let row = rows
                .get(*c)
                .ok_or_else(|| internal("caption index outside `sim`"))?;
            let ok = match row.as_slice() {
                Some(s) => accumulate(s.iter().copied(), truth, &mut count),
                None => accumulate(row.iter().copied(), truth, &mut count),
            };
            if !ok {
                return Err(not_finite(ARG, *c, None));
            }
        } else {
            hit.clear();
            hit.resize(n_videos, false);
            for &c in captions {
                let row = rows
                    .get(c)
                    .ok_or_else(|| internal("caption index outside `sim`"))?;
                let ok = match row.as_slice() {
                    Some(s) => mark(s.iter().copied(), truth, &mut hit),
                    None => mark(row.iter().copied(), truth, &mut hit),
                };
                if !ok {
                    return Err(not_finite(ARG, c, None));
                }
            }
            count
                .iter_mut()
                .zip(&hit)
                .for_each(|(n, &h)| *n += u32::from(h));
        }
    }
    Ok(count)
}

/// The rank of entry `t` in `row`; `None` when the row has a non-finite entry.
#[inline]
fn rank_in_row<F: Score>(row: &ArrayView1<'_, F>, t: usize) -> Option<i64> {
    let truth = *row.get(t)?;
    let (n, finite) = match row.as_slice() {
        Some(s) => count_ge(s.iter().copied(), truth),
        None => count_ge(row.iter().copied(), truth),
    };
    // A row holds at most isize::MAX entries.
    finite.then_some(n as i64)
}

#[inline]
fn count_ge<F: Score>(it: impl Iterator<Item = F>, truth: F) -> (usize, bool) {
    let mut n = 0usize;
    let mut finite = true;
    for x in it {
        n += usize::from(x >= truth);
        finite &= x.finite();
    }
    (n, finite)
}

#[inline]
fn accumulate<F: Score>(row: impl Iterator<Item = F>, truth: &[F], count: &mut [u32]) -> bool {
    let mut finite = true;
    for ((n, &t), x) in count.iter_mut().zip(truth).zip(row) {
        *n += u32::from(x >= t);
        finite &= x.finite();
    }
    finite
}

#[inline]
fn mark<F: Score>(row: impl Iterator<Item = F>, truth: &[F], hit: &mut [bool]) -> bool {
    let mut finite = true;
    for ((h, &t), x) in hit.iter_mut().zip(truth).zip(row) {
        *h |= x >= t;
        finite &= x.finite();
    }
    finite
}

fn internal(msg: &str) -> DglError {
    DglError::value(ARG, format!("internal error: {msg}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};

    #[test]
    fn t2v_counts_ties_pessimistically() {
        let sim = array![[1.0f32, 1.0, 0.0], [0.0, 2.0, 2.0], [3.0, 3.0, 3.0]];
        assert_eq!(ranks_t2v(sim.view(), None).unwrap(), vec![2, 2, 3]);
    }

    #[test]
    fn v2t_is_t2v_of_transpose_for_one_caption() {
        let sim = array![[0.5f64, 0.1, 0.9], [0.2, 0.3, 0.1], [0.7, 0.8, 0.6]];
        let t = sim.t().to_owned();
        assert_eq!(
            ranks_v2t(sim.view(), None).unwrap(),
            ranks_t2v(t.view(), None).unwrap()
        );
        // and a transposed (non-contiguous) view gives the same answer
        assert_eq!(
            ranks_t2v(sim.t(), None).unwrap(),
            ranks_v2t(sim.view(), None).unwrap()
        );
    }

    #[test]
    fn v2t_several_captions_takes_group_max() {
        // captions 0,1 -> video 0; caption 2 -> video 1
        let sim = array![[0.1f32, 0.9], [0.8, 0.0], [0.5, 0.2]];
        let map = array![0i64, 0, 1];
        // M = [[0.8, 0.9], [0.5, 0.2]]; video 0: M[.,0] = [0.8, 0.5] -> rank 1;
        // video 1: M[.,1] = [0.9, 0.2], truth 0.2 -> rank 2
        assert_eq!(ranks_v2t(sim.view(), Some(map.view())).unwrap(), vec![1, 2]);
        assert_eq!(
            ranks_t2v(sim.view(), Some(map.view())).unwrap(),
            vec![2, 1, 2]
        );
    }

    #[test]
    fn rejects_nan() {
        let mut sim = Array2::<f32>::eye(4);
        sim[[2, 3]] = f32::NAN;
        assert!(ranks_t2v(sim.view(), None).is_err());
        assert!(ranks_v2t(sim.view(), None).is_err());
    }
}

//! Inference-time re-scoring of a (queries x gallery) similarity, reported
//! separately from the raw metrics and never tuned on the test set.
//!
//! * [`qb_norm`]: Querybank Normalisation with the dynamic inverted softmax
//!   (Bogolin et al., "Cross Modal Retrieval with Querybank Normalisation",
//!   CVPR 2022).
//! * [`dual_softmax`]: the dual softmax (DSL) prior of CAMoE (Cheng et al. 2021).
//!
//! Both compute in f64 and return the dtype they were given.

use super::check::not_finite;
use super::Score;
use crate::{DglError, Result};
use ndarray::{Array2, ArrayView1, ArrayView2};
use rayon::prelude::*;

fn check_matrix<F: Score>(arg: &str, m: &ArrayView2<'_, F>) -> Result<(usize, usize)> {
    match m.shape() {
        &[r, c] if r > 0 && c > 0 => Ok((r, c)),
        s => Err(DglError::shape(
            arg,
            "(queries, gallery) with both sides > 0",
            s,
        )),
    }
}

fn check_positive(arg: &str, v: f64) -> Result<f64> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(DglError::value(
            arg,
            format!("must be finite and > 0, got {v}"),
        ))
    }
}

/// `lse[j] = log sum_i exp(scale * m[i, j])` for every column `j`; errors on a
/// non-finite entry of `m` (named `arg`).
fn column_logsumexp<F: Score>(
    arg: &str,
    rows: &[ArrayView1<'_, F>],
    n_cols: usize,
    scale: f64,
) -> Result<Vec<f64>> {
    let block = rows.len().div_ceil(2 * rayon::current_num_threads()).max(1);
    let max = rows
        .par_chunks(block)
        .enumerate()
        .map(|(b, blk)| {
            let mut m = vec![f64::NEG_INFINITY; n_cols];
            for (i, row) in blk.iter().enumerate() {
                for (mj, &x) in m.iter_mut().zip(row.iter()) {
                    if !x.finite() {
                        return Err(not_finite(arg, b * block + i, None));
                    }
                    *mj = mj.max(scale * x.to_f64());
                }
            }
            Ok(m)
        })
        .try_reduce(
            || vec![f64::NEG_INFINITY; n_cols],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x = x.max(*y));
                Ok(a)
            },
        )?;
    let sum = rows
        .par_chunks(block)
        .map(|blk| {
            let mut s = vec![0.0f64; n_cols];
            for row in blk {
                for ((sj, &mj), &x) in s.iter_mut().zip(&max).zip(row.iter()) {
                    *sj += (scale * x.to_f64() - mj).exp();
                }
            }
            s
        })
        .reduce(
            || vec![0.0f64; n_cols],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    Ok(max.iter().zip(&sum).map(|(m, s)| m + s.ln()).collect())
}

/// `log sum_j exp(scale * row[j])`; `None` on a non-finite entry.
fn row_logsumexp<F: Score>(row: &ArrayView1<'_, F>, scale: f64) -> Option<f64> {
    let mut m = f64::NEG_INFINITY;
    for &x in row {
        if !x.finite() {
            return None;
        }
        m = m.max(scale * x.to_f64());
    }
    Some(
        m + row
            .iter()
            .map(|&x| (scale * x.to_f64() - m).exp())
            .sum::<f64>()
            .ln(),
    )
}

/// Fills a (rows x cols) array row by row, in parallel.
fn fill_rows<F: Score>(
    n_rows: usize,
    n_cols: usize,
    f: impl Fn(usize, &mut [F]) -> Result<()> + Sync,
) -> Result<Array2<F>> {
    let mut data = vec![F::from_f64(0.0); n_rows * n_cols];
    data.par_chunks_mut(n_cols.max(1))
        .enumerate()
        .try_for_each(|(i, out)| f(i, out))?;
    Array2::from_shape_vec((n_rows, n_cols), data)
        .map_err(|e| DglError::value("sim", format!("internal error: {e}")))
}

/// Dual softmax (DSL): `sim * softmax(sim / temperature, axis)`.
///
/// `axis = 0` normalises over the queries (rows) of each gallery column, the
/// prior used for text->video on a (captions x videos) matrix; `axis = 1` over
/// each row, the prior for video->text. `temperature > 0`: 1.0 suits logits
/// already multiplied by CLIP's `logit_scale` (100), 0.01 plain cosines. (The
/// usual code also multiplies by the number of rows, a constant that does not
/// change any rank; it is left out.)
pub fn dual_softmax<F: Score>(
    sim: ArrayView2<'_, F>,
    temperature: f64,
    axis: usize,
) -> Result<Array2<F>> {
    let (n_rows, n_cols) = check_matrix("sim", &sim)?;
    let inv_t = 1.0 / check_positive("temperature", temperature)?;
    let rows: Vec<ArrayView1<'_, F>> = sim.outer_iter().collect();
    match axis {
        0 => {
            let lse = column_logsumexp("sim", &rows, n_cols, inv_t)?;
            fill_rows(n_rows, n_cols, |i, out| {
                let row = rows
                    .get(i)
                    .ok_or_else(|| DglError::value("sim", "internal error: row"))?;
                for ((o, &x), &l) in out.iter_mut().zip(row.iter()).zip(&lse) {
                    let s = x.to_f64();
                    *o = F::from_f64(s * (inv_t * s - l).exp());
                }
                Ok(())
            })
        }
        1 => fill_rows(n_rows, n_cols, |i, out| {
            let row = rows
                .get(i)
                .ok_or_else(|| DglError::value("sim", "internal error: row"))?;
            let l = row_logsumexp(row, inv_t).ok_or_else(|| not_finite("sim", i, None))?;
            for (o, &x) in out.iter_mut().zip(row.iter()) {
                let s = x.to_f64();
                *o = F::from_f64(s * (inv_t * s - l).exp());
            }
            Ok(())
        }),
        a => Err(DglError::value(
            "axis",
            format!("must be 0 (softmax over queries) or 1 (over the gallery), got {a}"),
        )),
    }
}

/// The top `k` gallery indices of a row: score descending, then index ascending.
fn top_k<F: Score>(row: &ArrayView1<'_, F>, k: usize) -> Vec<usize> {
    let by_score = |a: &(usize, F), b: &(usize, F)| {
        b.1.partial_cmp(&a.1)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.0.cmp(&b.0))
    };
    let mut items: Vec<(usize, F)> = row.iter().copied().enumerate().collect();
    if k < items.len() {
        items.select_nth_unstable_by(k.saturating_sub(1), by_score);
        items.truncate(k);
    }
    items.into_iter().map(|(j, _)| j).collect()
}

/// The first index of the maximum of a row.
fn argmax<F: Score>(row: &ArrayView1<'_, F>) -> Option<usize> {
    let mut best: Option<(usize, F)> = None;
    for (j, &x) in row.iter().enumerate() {
        best = match best {
            Some((_, b)) if b >= x => best,
            _ => Some((j, x)),
        };
    }
    best.map(|(j, _)| j)
}

/// QB-Norm with the dynamic inverted softmax (DIS).
///
/// `sim`: (queries, gallery) test similarities; `bank`: (bank, gallery), the
/// similarities of the query bank (training captions) to the same test gallery.
/// `k >= 1` (at most the gallery size) and `beta > 0` as in the paper (their
/// defaults: 1 and 20).
///
/// 1. The activation set `A` is every gallery item that is among the top `k` of
///    at least one bank query (ties: the lower index first).
/// 2. For each test query `i`, if its top-1 gallery item (first maximum) is in
///    `A`, its row becomes the inverted softmax over the bank,
///    `log(exp(beta * sim[i, j]) / sum_b exp(beta * bank[b, j]))
///     = beta * sim[i, j] - logsumexp_b(beta * bank[b, j])`;
///    otherwise the row is left unchanged.
///
/// This is the public reference implementation (ioanacroi/qb-norm,
/// `dynamic_inverted_softmax.py`) in the log domain: within a row the result is
/// a strictly increasing function of the reference's `exp(.)/sum exp(.)`, so every
/// text->video rank is the same, and it neither overflows nor underflows into
/// ties (`np.exp(out[i])` gives the reference values of a normalised row). Rows
/// of different queries are on different scales: rank the result along rows
/// (text->video) only. For video->text, normalise `sim.T` with a bank of
/// training videos against the test captions.
pub fn qb_norm<F: Score>(
    sim: ArrayView2<'_, F>,
    bank: ArrayView2<'_, F>,
    k: usize,
    beta: f64,
) -> Result<Array2<F>> {
    qb_norm_min_count(sim, bank, k, beta, 1)
}

/// [`qb_norm`] with a stricter activation set: a gallery item is activated when it is
/// among the top `k` of at least `min_count` bank queries (`1 <= min_count <= bank
/// queries`; 1 is [`qb_norm`]). The DGL authors' released evaluation script uses this
/// "threshold" variant (its `theta`: 3 for text->video, 5 for video->text).
pub fn qb_norm_min_count<F: Score>(
    sim: ArrayView2<'_, F>,
    bank: ArrayView2<'_, F>,
    k: usize,
    beta: f64,
    min_count: usize,
) -> Result<Array2<F>> {
    let (n_queries, n_gallery) = check_matrix("sim", &sim)?;
    let bank_shape = bank.shape();
    match bank_shape {
        &[b, g] if b > 0 && g == n_gallery => {}
        s => {
            return Err(DglError::shape(
                "bank",
                format!("(bank queries, {n_gallery}) with bank queries > 0 (the gallery of `sim`)"),
                s,
            ))
        }
    }
    if k < 1 || k > n_gallery {
        return Err(DglError::value(
            "k",
            format!("must be in [1, {n_gallery}] (the gallery size), got {k}"),
        ));
    }
    let beta = check_positive("beta", beta)?;
    let bank_rows: Vec<ArrayView1<'_, F>> = bank.outer_iter().collect();
    if min_count < 1 || min_count > bank_rows.len() {
        return Err(DglError::value(
            "min_count",
            format!("must be in [1, {}] (the bank queries), got {min_count}", bank_rows.len()),
        ));
    }
    // Also checks that `bank` is finite.
    let lse = column_logsumexp("bank", &bank_rows, n_gallery, beta)?;
    let mut counts = vec![0usize; n_gallery];
    let tops: Vec<Vec<usize>> = bank_rows.par_iter().map(|row| top_k(row, k)).collect();
    for j in tops.into_iter().flatten() {
        if let Some(c) = counts.get_mut(j) {
            *c += 1;
        }
    }
    let activated: Vec<bool> = counts.iter().map(|&c| c >= min_count).collect();
    let rows: Vec<ArrayView1<'_, F>> = sim.outer_iter().collect();
    fill_rows(n_queries, n_gallery, |i, out| {
        let row = rows
            .get(i)
            .ok_or_else(|| DglError::value("sim", "internal error: row"))?;
        if row.iter().any(|x| !x.finite()) {
            return Err(not_finite("sim", i, None));
        }
        let normalise = argmax(row)
            .and_then(|j| activated.get(j).copied())
            .unwrap_or(false);
        for ((o, &x), &l) in out.iter_mut().zip(row.iter()).zip(&lse) {
            *o = if normalise {
                F::from_f64(beta * x.to_f64() - l)
            } else {
                x
            };
        }
        Ok(())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn dsl_columns_sum_to_sim_weighted_prior() {
        let sim = array![[1.0f64, 0.0], [0.0, 1.0], [1.0, 1.0]];
        let out = dual_softmax(sim.view(), 1.0, 0).unwrap();
        let e = std::f64::consts::E;
        let z = 2.0 * e + 1.0;
        assert!((out[[0, 0]] - e / z).abs() < 1e-12);
        assert_eq!(out[[0, 1]], 0.0);
        assert!((out[[2, 1]] - e / z).abs() < 1e-12);
    }

    #[test]
    fn qb_norm_hand_example() {
        // bank top-1: gallery 0 for both bank rows -> A = {0}
        let bank = array![[1.0f64, 0.0], [0.5, 0.0]];
        let sim = array![[0.9f64, 0.1], [0.2, 0.8]];
        let out = qb_norm(sim.view(), bank.view(), 1, 1.0).unwrap();
        let l0 = (1.0f64.exp() + 0.5f64.exp()).ln();
        let l1 = 2.0f64.ln();
        assert!((out[[0, 0]] - (0.9 - l0)).abs() < 1e-12);
        assert!((out[[0, 1]] - (0.1 - l1)).abs() < 1e-12);
        assert_eq!(out.row(1).to_vec(), vec![0.2, 0.8]);
    }

    #[test]
    fn qb_norm_min_count_activates_only_frequent_hubs() {
        // bank top-1: gallery 0 twice, gallery 1 once
        let bank = array![[1.0f64, 0.0], [0.5, 0.0], [0.0, 1.0]];
        let sim = array![[0.9f64, 0.1], [0.2, 0.8]];
        let once = qb_norm_min_count(sim.view(), bank.view(), 1, 1.0, 1).unwrap();
        let twice = qb_norm_min_count(sim.view(), bank.view(), 1, 1.0, 2).unwrap();
        assert_eq!(once, qb_norm(sim.view(), bank.view(), 1, 1.0).unwrap());
        assert_ne!(once.row(1).to_vec(), vec![0.2, 0.8]); // gallery 1 is activated once
        assert_eq!(twice.row(0), once.row(0)); // gallery 0: twice
        assert_eq!(twice.row(1).to_vec(), vec![0.2, 0.8]); // gallery 1: not twice
        for bad in [0, 4] {
            let err = qb_norm_min_count(sim.view(), bank.view(), 1, 1.0, bad).unwrap_err();
            assert!(err.to_string().contains("`min_count`"), "{err}");
        }
    }
}

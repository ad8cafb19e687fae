//! Summary metrics from 1-based ranks.

use crate::{DglError, Result};

/// The metrics of one direction. Recalls are in percent, ranks 1-based.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrievalMetrics {
    pub r1: f64,
    pub r5: f64,
    pub r10: f64,
    pub r50: f64,
    /// Median rank (the mean of the two middle ranks for an even count, as
    /// `np.median`).
    pub median_rank: f64,
    pub mean_rank: f64,
}

const ARG: &str = "ranks";

fn check(ranks: &[i64]) -> Result<()> {
    if ranks.is_empty() {
        return Err(DglError::shape(ARG, "(n,) with n > 0", [0usize]));
    }
    match ranks.iter().position(|&r| r < 1) {
        Some(i) => Err(DglError::value(
            ARG,
            format!(
                "entry {i} is {}; ranks are 1-based",
                ranks.get(i).copied().unwrap_or(0)
            ),
        )),
        None => Ok(()),
    }
}

/// Percentage of queries whose rank is at most `k`.
pub fn recall_at_k(ranks: &[i64], k: i64) -> Result<f64> {
    check(ranks)?;
    let hits = ranks.iter().filter(|&&r| r <= k).count();
    Ok(100.0 * hits as f64 / ranks.len() as f64)
}

/// Median rank (`np.median` convention).
pub fn median_rank(ranks: &[i64]) -> Result<f64> {
    check(ranks)?;
    let mut sorted = ranks.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    let hi = sorted.get(n / 2).copied().unwrap_or(0) as f64;
    if n % 2 == 1 {
        Ok(hi)
    } else {
        let lo = sorted.get(n / 2 - 1).copied().unwrap_or(0) as f64;
        Ok(0.5 * (lo + hi))
    }
}

/// Mean rank.
pub fn mean_rank(ranks: &[i64]) -> Result<f64> {
    check(ranks)?;
    Ok(ranks.iter().map(|&r| r as f64).sum::<f64>() / ranks.len() as f64)
}

/// R@1, R@5, R@10, R@50, MdR and MnR of one direction.
pub fn summarize_ranks(ranks: &[i64]) -> Result<RetrievalMetrics> {
    Ok(RetrievalMetrics {
        r1: recall_at_k(ranks, 1)?,
        r5: recall_at_k(ranks, 5)?,
        r10: recall_at_k(ranks, 10)?,
        r50: recall_at_k(ranks, 50)?,
        median_rank: median_rank(ranks)?,
        mean_rank: mean_rank(ranks)?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        let m = summarize_ranks(&[1, 2, 6, 11, 60]).unwrap();
        assert_eq!(m.r1, 20.0);
        assert_eq!(m.r5, 40.0);
        assert_eq!(m.r10, 60.0);
        assert_eq!(m.r50, 80.0);
        assert_eq!(m.median_rank, 6.0);
        assert_eq!(m.mean_rank, 16.0);
        assert_eq!(median_rank(&[4, 1, 3, 2]).unwrap(), 2.5);
    }

    #[test]
    fn rejects_bad_ranks() {
        assert!(summarize_ranks(&[]).is_err());
        assert!(summarize_ranks(&[1, 0]).is_err());
    }
}

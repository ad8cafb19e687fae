//! Retrieval metrics: R@k, median and mean rank, text->video and video->text
//! (spec section 7).
//!
//! * [`ranks`]: 1-based ranks from a (captions x videos) similarity held in host
//!   memory (`ndarray`, rayon over rows, no sort, O(N) extra memory).
//! * [`tensor`]: the same ranks from a `tch::Tensor` on any device, computed with
//!   tensor ops one chunk of rows (or columns) at a time, plus the chunked
//!   evaluation straight from embeddings that never holds the full matrix.
//! * [`recall`]: R@1/5/10/50, MdR and MnR from ranks.
//! * [`postprocess`]: QB-Norm (dynamic inverted softmax) and dual softmax.
//!
//! # Protocol
//!
//! `caption_to_video[c]` is the video of caption `c` (`None`: caption `c` belongs to
//! video `c` and the matrix must be square). Every video needs at least one caption.
//!
//! * text->video: caption `c` is ranked against every video; the answer is
//!   `caption_to_video[c]`.
//! * video->text (CLIP4Clip): the (captions x videos) matrix is reduced to
//!   `M[u, v] = max over captions c of video u of sim[c, v]`; video `v` is the
//!   query, the candidates are the caption groups `u` scored by `M[u, v]`, and the
//!   answer is `u = v` (the diagonal). With one caption per video `M = sim` and
//!   these are the ranks of `sim.T`.
//!
//! # Ties
//!
//! Ties are ranked pessimistically: `rank = #{j : s_j >= s_true}`, the true item
//! after every item with an equal score. A constant (captions x N) matrix
//! therefore gives every rank N (R@k = 0 for k < N), never better than chance,
//! where an optimistic rule (`#{j : s_j > s_true} + 1`) would give 100%. The usual
//! sort-based numpy code (`np.where(sorted - true == 0)`) returns every tied
//! column, so a tied caption is counted twice (or more): once as a hit, once as a
//! miss, and the list of ranks is longer than the list of queries.

pub mod postprocess;
pub mod ranks;
pub mod recall;
pub mod tensor;

mod check;

pub use postprocess::{dual_softmax, qb_norm, qb_norm_min_count};
pub use ranks::{ranks_t2v, ranks_v2t};
pub use recall::{mean_rank, median_rank, recall_at_k, summarize_ranks, RetrievalMetrics};
pub use tensor::{ranks_chunked, ranks_t2v_tensor, ranks_v2t_tensor, similarity_chunked};

/// A similarity score type of the host path: `f32` or `f64`.
pub trait Score: Copy + PartialOrd + Send + Sync + std::fmt::Debug + 'static {
    /// The numpy name of the dtype, for messages.
    const DTYPE: &'static str;
    fn finite(self) -> bool;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

impl Score for f32 {
    const DTYPE: &'static str = "float32";
    #[inline]
    fn finite(self) -> bool {
        self.is_finite()
    }
    #[inline]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Score for f64 {
    const DTYPE: &'static str = "float64";
    #[inline]
    fn finite(self) -> bool {
        self.is_finite()
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline]
    fn from_f64(v: f64) -> Self {
        v
    }
}

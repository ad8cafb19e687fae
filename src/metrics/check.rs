//! Validation shared by the host and tensor paths: the matrix shape and the
//! caption -> video map.

use crate::{DglError, Result};
use ndarray::ArrayView1;

/// A validated caption -> video map.
#[derive(Debug, Clone)]
pub(crate) struct CaptionMap {
    /// `target[c]`: the video of caption `c`.
    pub target: Vec<usize>,
    /// Captions grouped by video (CSR): the captions of video `u` are
    /// `members[offsets[u]..offsets[u + 1]]`, in increasing order.
    pub offsets: Vec<usize>,
    pub members: Vec<usize>,
    /// True when no map was given (caption `c` is video `c`).
    pub identity: bool,
}

impl CaptionMap {
    pub fn n_videos(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// The captions of video `u` (empty when `u` is out of range).
    pub fn captions_of(&self, u: usize) -> &[usize] {
        match (self.offsets.get(u), self.offsets.get(u + 1)) {
            (Some(&a), Some(&b)) => self.members.get(a..b).unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// Checks a (captions x videos) shape: both sides non-empty.
pub(crate) fn check_shape(arg: &str, shape: &[usize]) -> Result<(usize, usize)> {
    match shape {
        &[c, v] if c > 0 && v > 0 => Ok((c, v)),
        _ => Err(DglError::shape(
            arg,
            "(captions, videos) with both sides > 0",
            shape,
        )),
    }
}

/// Where captions and videos come from, for messages.
pub(crate) struct Layout<'a> {
    /// The argument blamed when `caption_to_video` is None and the counts differ.
    pub arg: &'a str,
    pub shape: &'a [usize],
    /// What `arg` should look like in that case.
    pub square: &'a str,
    /// "the rows of `sim`" and the like.
    pub captions: &'a str,
    pub videos: &'a str,
}

impl<'a> Layout<'a> {
    pub fn sim(shape: &'a [usize]) -> Self {
        Layout {
            arg: "sim",
            shape,
            square: "square (n, n) when `caption_to_video` is None (one caption per video)",
            captions: "the rows of `sim`",
            videos: "the columns of `sim`",
        }
    }
}

/// Validates `caption_to_video` against a `sim` of shape (n_captions, n_videos).
///
/// `None` means one caption per video: `sim` must be square. Otherwise the map
/// must have one entry per caption, every entry in `[0, n_videos)`, and every
/// video must have at least one caption.
pub(crate) fn caption_map(
    caption_to_video: Option<ArrayView1<'_, i64>>,
    n_captions: usize,
    n_videos: usize,
    layout: &Layout<'_>,
) -> Result<CaptionMap> {
    const ARG: &str = "caption_to_video";
    let target: Vec<usize> = match caption_to_video {
        None => {
            if n_captions != n_videos {
                return Err(DglError::Shape {
                    arg: layout.arg.into(),
                    expected: layout.square.into(),
                    got: format!("{:?}", layout.shape),
                });
            }
            (0..n_captions).collect()
        }
        Some(map) => {
            if map.len() != n_captions {
                return Err(DglError::shape(
                    ARG,
                    format!(
                        "({n_captions},): one video index per caption ({})",
                        layout.captions
                    ),
                    map.shape(),
                ));
            }
            let mut target = Vec::with_capacity(n_captions);
            for (c, &v) in map.iter().enumerate() {
                match usize::try_from(v) {
                    Ok(u) if u < n_videos => target.push(u),
                    _ => {
                        return Err(DglError::value(
                            ARG,
                            format!(
                                "entry {c} is {v}, outside [0, {n_videos}) ({})",
                                layout.videos
                            ),
                        ))
                    }
                }
            }
            target
        }
    };
    let identity = caption_to_video.is_none();
    // Group the captions by video (counting sort, stable).
    let mut counts = vec![0usize; n_videos];
    for &u in &target {
        if let Some(n) = counts.get_mut(u) {
            *n += 1;
        }
    }
    if let Some(u) = counts.iter().position(|&n| n == 0) {
        return Err(DglError::value(
            ARG,
            format!(
                "video {u} has no caption; every video ({}) needs at least one",
                layout.videos
            ),
        ));
    }
    let mut offsets = Vec::with_capacity(n_videos + 1);
    let mut acc = 0usize;
    offsets.push(0);
    for &n in &counts {
        acc += n;
        offsets.push(acc);
    }
    let mut fill = offsets.clone();
    let mut members = vec![0usize; n_captions];
    for (c, &u) in target.iter().enumerate() {
        if let Some(slot) = fill.get_mut(u) {
            if let Some(m) = members.get_mut(*slot) {
                *m = c;
            }
            *slot += 1;
        }
    }
    Ok(CaptionMap {
        target,
        offsets,
        members,
        identity,
    })
}

/// The error for a non-finite score.
pub(crate) fn not_finite(arg: &str, row: usize, col: Option<usize>) -> DglError {
    let at = match col {
        Some(c) => format!("at ({row}, {c})"),
        None => format!("in row {row}"),
    };
    DglError::value(
        arg,
        format!("contains NaN or inf ({at}); every score must be finite"),
    )
}

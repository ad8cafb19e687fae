//! Integration tests of the pure Rust metrics core (no Python): host path against
//! a naive counting reference, tensor and chunked paths against the host path,
//! post-processing on hand-checked examples, and every validation error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dgl_rs::metrics::{self, Score};
use dgl_rs::DglError;
use ndarray::{array, Array1, Array2, ArrayView2};
use tch::{Device, Kind, Tensor};

/// A small deterministic generator (no rand dependency).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    /// Uniform in [0, 1); with `levels` > 0, rounded to that many levels (ties).
    fn uniform(&mut self, levels: u64) -> f64 {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        if levels > 0 {
            (u * levels as f64).floor() / levels as f64
        } else {
            u
        }
    }
}

struct Case {
    sim: Array2<f64>,
    map: Option<Array1<i64>>,
}

fn case(rng: &mut Lcg, n_videos: usize, max_caps: u64, levels: u64) -> Case {
    let map: Option<Vec<i64>> = if max_caps == 1 {
        None
    } else {
        let mut m = Vec::new();
        for v in 0..n_videos {
            for _ in 0..(1 + rng.next() % max_caps) {
                m.push(v as i64);
            }
        }
        // a deterministic shuffle
        for i in (1..m.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            m.swap(i, j);
        }
        Some(m)
    };
    let n_captions = map.as_ref().map_or(n_videos, Vec::len);
    let sim = Array2::from_shape_fn((n_captions, n_videos), |_| rng.uniform(levels));
    Case {
        sim,
        map: map.map(Array1::from),
    }
}

fn target(c: &Case, i: usize) -> usize {
    c.map.as_ref().map_or(i, |m| m[i] as usize)
}

fn ref_t2v(c: &Case) -> Vec<i64> {
    (0..c.sim.nrows())
        .map(|i| {
            let t = c.sim[[i, target(c, i)]];
            c.sim.row(i).iter().filter(|&&x| x >= t).count() as i64
        })
        .collect()
}

fn ref_v2t(c: &Case) -> Vec<i64> {
    let nv = c.sim.ncols();
    let mut m = Array2::from_elem((nv, nv), f64::NEG_INFINITY);
    for i in 0..c.sim.nrows() {
        let u = target(c, i);
        for v in 0..nv {
            m[[u, v]] = m[[u, v]].max(c.sim[[i, v]]);
        }
    }
    (0..nv)
        .map(|v| (0..nv).filter(|&u| m[[u, v]] >= m[[v, v]]).count() as i64)
        .collect()
}

fn cases() -> Vec<Case> {
    let mut rng = Lcg(7);
    let mut out = Vec::new();
    for &(nv, caps) in &[(1, 1), (2, 1), (9, 1), (40, 1), (3, 3), (25, 4), (60, 10)] {
        for &levels in &[0, 4] {
            out.push(case(&mut rng, nv, caps, levels));
        }
    }
    out
}

fn check_host<F: Score>(c: &Case, sim: ArrayView2<'_, F>) {
    let map = c.map.as_ref().map(|m| m.view());
    assert_eq!(metrics::ranks_t2v(sim, map).unwrap(), ref_t2v(c));
    assert_eq!(metrics::ranks_v2t(sim, map).unwrap(), ref_v2t(c));
}

#[test]
fn host_matches_reference_f64_and_f32() {
    for c in cases() {
        check_host(&c, c.sim.view());
        // f32 keeps the order (and ties) of these values: 6 decimal digits
        let s32 = c.sim.mapv(|x| x as f32);
        check_host(&c, s32.view());
        // a transposed copy viewed back through .t() is non-contiguous
        let t = c.sim.t().to_owned();
        check_host(&c, t.t());
    }
}

#[test]
fn tensor_matches_host() {
    for c in cases() {
        let map = c.map.as_ref().map(|m| m.view());
        let t = Tensor::from_slice(c.sim.as_slice().unwrap())
            .reshape([c.sim.nrows() as i64, c.sim.ncols() as i64]);
        for kind in [Kind::Double, Kind::Float] {
            let t = t.to_kind(kind);
            for chunk in [1, 3, 1024] {
                assert_eq!(
                    metrics::ranks_t2v_tensor(&t, map, chunk).unwrap(),
                    ref_t2v(&c)
                );
                assert_eq!(
                    metrics::ranks_v2t_tensor(&t, map, chunk).unwrap(),
                    ref_v2t(&c)
                );
            }
        }
    }
}

#[test]
fn chunked_matches_full() {
    let mut rng = Lcg(11);
    for &(nv, caps) in &[(1usize, 1u64), (13, 1), (12, 3)] {
        let shape = case(&mut rng, nv, caps, 0);
        let nc = shape.sim.nrows();
        // integer-valued embeddings: exact products, many ties
        let emb = |n: usize, rng: &mut Lcg| {
            let v: Vec<f32> = (0..n * 6).map(|_| (rng.next() % 5) as f32 - 2.0).collect();
            Tensor::from_slice(&v).reshape([n as i64, 6])
        };
        let (text, video) = (emb(nc, &mut rng), emb(nv, &mut rng));
        let full = text.matmul(&video.tr()).to_kind(Kind::Double).contiguous();
        let flat: Vec<f64> = Vec::try_from(&full.reshape([-1])).unwrap();
        let c = Case {
            sim: Array2::from_shape_vec((nc, nv), flat).unwrap(),
            map: shape.map,
        };
        let map = c.map.as_ref().map(|m| m.view());
        for chunk in [1, 4, 4096] {
            let (t2v, v2t) = metrics::ranks_chunked(&text, &video, map, chunk).unwrap();
            assert_eq!(t2v, ref_t2v(&c));
            assert_eq!(v2t, ref_v2t(&c));
            let out = Tensor::zeros([nc as i64, nv as i64], (Kind::Float, Device::Cpu));
            metrics::similarity_chunked(&text, &video, &out, chunk).unwrap();
            assert!(out.to_kind(Kind::Double).equal(&full));
        }
    }
}

#[test]
fn ties_are_pessimistic() {
    let constant = Array2::<f32>::from_elem((5, 5), 0.25);
    assert_eq!(
        metrics::ranks_t2v(constant.view(), None).unwrap(),
        vec![5; 5]
    );
    assert_eq!(
        metrics::ranks_v2t(constant.view(), None).unwrap(),
        vec![5; 5]
    );
    let m = metrics::summarize_ranks(&[5; 5]).unwrap();
    assert_eq!(m.r1, 0.0);
    assert_eq!(m.r5, 100.0);
    let eye = Array2::<f64>::eye(4);
    let r = metrics::ranks_t2v(eye.view(), None).unwrap();
    assert_eq!(metrics::summarize_ranks(&r).unwrap().r1, 100.0);
}

#[test]
fn summary_hand_computed() {
    let m = metrics::summarize_ranks(&[1, 3, 7, 12, 51, 2]).unwrap();
    assert!((m.r1 - 100.0 / 6.0).abs() < 1e-12);
    assert!((m.r5 - 50.0).abs() < 1e-12);
    assert!((m.r10 - 400.0 / 6.0).abs() < 1e-12);
    assert!((m.r50 - 500.0 / 6.0).abs() < 1e-12);
    assert_eq!(m.median_rank, 5.0);
    assert!((m.mean_rank - 76.0 / 6.0).abs() < 1e-12);
}

#[test]
fn postprocess_hand_checked() {
    let sim = array![[0.0f64, 1.0], [2.0, 3.0]];
    // softmax over rows of each column (axis 0), temperature 1
    let out = metrics::dual_softmax(sim.view(), 1.0, 0).unwrap();
    let p = 1.0 / (1.0 + (-2.0f64).exp()); // softmax weight of the larger entry
    assert!((out[[1, 0]] - 2.0 * p).abs() < 1e-12);
    assert!((out[[0, 1]] - (1.0 - p)).abs() < 1e-12);
    let out1 = metrics::dual_softmax(sim.view(), 0.5, 1).unwrap();
    let q = 1.0 / (1.0 + (-2.0f64).exp());
    assert!((out1[[1, 1]] - 3.0 * q).abs() < 1e-12);

    let bank = array![[0.0f32, 1.0, 0.0], [0.0, 0.9, 0.2]]; // A = {1}
    let test = array![[0.1f32, 0.7, 0.2], [0.9, 0.1, 0.0]];
    let out = metrics::qb_norm(test.view(), bank.view(), 1, 2.0).unwrap();
    let lse = |a: f64, b: f64| ((2.0 * a).exp() + (2.0 * b).exp()).ln();
    let want0 = [
        0.2 - lse(0.0, 0.0),
        1.4 - lse(1.0, 0.9),
        0.4 - lse(0.0, 0.2),
    ];
    for (o, w) in out.row(0).iter().zip(want0) {
        assert!((f64::from(*o) - w).abs() < 1e-5, "{o} vs {w}");
    }
    assert_eq!(out.row(1), test.row(1));
}

fn arg_of(e: DglError) -> String {
    match e {
        DglError::Shape { arg, .. }
        | DglError::Dtype { arg, .. }
        | DglError::Device { arg, .. } => arg,
        DglError::Value { arg, .. } => arg,
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn every_bad_input_is_an_error_naming_the_argument() {
    let eye = Array2::<f32>::eye(3);
    let mut nan = eye.clone();
    nan[[0, 2]] = f32::NAN;
    let mut inf = eye.clone();
    inf[[2, 2]] = f32::INFINITY;
    let rect = Array2::<f32>::zeros((3, 4));
    let empty = Array2::<f32>::zeros((0, 3));
    let short = array![0i64, 1];
    let out_of_range = array![0i64, 1, 3];
    let negative = array![0i64, -1, 2];
    let orphan = array![0i64, 0, 2]; // video 1 has no caption
    type RankFn = for<'a, 'b> fn(
        ArrayView2<'a, f32>,
        Option<ndarray::ArrayView1<'b, i64>>,
    ) -> dgl_rs::Result<Vec<i64>>;
    let fns: [RankFn; 2] = [metrics::ranks_t2v::<f32>, metrics::ranks_v2t::<f32>];
    for f in fns {
        assert_eq!(arg_of(f(nan.view(), None).unwrap_err()), "sim");
        assert_eq!(arg_of(f(inf.view(), None).unwrap_err()), "sim");
        assert_eq!(arg_of(f(rect.view(), None).unwrap_err()), "sim");
        assert_eq!(arg_of(f(empty.view(), None).unwrap_err()), "sim");
        for m in [&short, &out_of_range, &negative, &orphan] {
            let e = f(eye.view(), Some(m.view())).unwrap_err();
            assert_eq!(arg_of(e), "caption_to_video");
        }
    }
    let msg = metrics::ranks_v2t(eye.view(), Some(orphan.view()))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("video 1 has no caption"), "{msg}");

    // tensor path
    let t = Tensor::from_slice(nan.as_slice().unwrap()).reshape([3, 3]);
    assert_eq!(
        arg_of(metrics::ranks_t2v_tensor(&t, None, 2).unwrap_err()),
        "sim"
    );
    assert_eq!(
        arg_of(metrics::ranks_v2t_tensor(&t, None, 2).unwrap_err()),
        "sim"
    );
    let ints = Tensor::from_slice(&[1i64, 0, 0, 1]).reshape([2, 2]);
    assert!(matches!(
        metrics::ranks_t2v_tensor(&ints, None, 2).unwrap_err(),
        DglError::Dtype { .. }
    ));
    let ok = Tensor::eye(3, (Kind::Float, Device::Cpu));
    assert_eq!(
        arg_of(metrics::ranks_t2v_tensor(&ok, None, 0).unwrap_err()),
        "chunk"
    );
    assert_eq!(
        arg_of(metrics::ranks_t2v_tensor(&ok.reshape([9]), None, 2).unwrap_err()),
        "sim"
    );

    // embeddings
    let text = Tensor::ones([3, 4], (Kind::Float, Device::Cpu));
    let video_bad_dim = Tensor::ones([3, 5], (Kind::Float, Device::Cpu));
    let video_f64 = Tensor::ones([3, 4], (Kind::Double, Device::Cpu));
    assert_eq!(
        arg_of(metrics::ranks_chunked(&text, &video_bad_dim, None, 2).unwrap_err()),
        "video_emb"
    );
    assert_eq!(
        arg_of(metrics::ranks_chunked(&text, &video_f64, None, 2).unwrap_err()),
        "video_emb"
    );
    let out_bad = Tensor::zeros([3, 2], (Kind::Float, Device::Cpu));
    assert_eq!(
        arg_of(metrics::similarity_chunked(&text, &text, &out_bad, 2).unwrap_err()),
        "out"
    );

    // post-processing
    let s = Array2::<f64>::eye(3);
    assert_eq!(
        arg_of(metrics::dual_softmax(s.view(), 0.0, 0).unwrap_err()),
        "temperature"
    );
    assert_eq!(
        arg_of(metrics::dual_softmax(s.view(), 1.0, 2).unwrap_err()),
        "axis"
    );
    assert_eq!(
        arg_of(metrics::qb_norm(s.view(), Array2::<f64>::eye(2).view(), 1, 20.0).unwrap_err()),
        "bank"
    );
    assert_eq!(
        arg_of(metrics::qb_norm(s.view(), s.view(), 0, 20.0).unwrap_err()),
        "k"
    );
    assert_eq!(
        arg_of(metrics::qb_norm(s.view(), s.view(), 1, f64::NAN).unwrap_err()),
        "beta"
    );
    assert_eq!(arg_of(metrics::summarize_ranks(&[]).unwrap_err()), "ranks");
}
